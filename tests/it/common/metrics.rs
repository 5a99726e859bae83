//! Scraping pullgate's `/metrics` endpoint as Prometheus would, over plain HTTP/1.1.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP response, as read off the wire.
pub struct Scraped {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Scraped {
    /// The value of one series, written exactly as exposed (`name{label="v",...}`). A series
    /// that is not exposed fails the test: a renamed metric or label must not read as 0.
    pub fn value(&self, series: &str) -> f64 {
        self.sample(series).unwrap_or_else(|| panic!("no series {series} is exposed:\n{}", self.body))
    }

    /// A labelled counter's value for a before/after reading: one never incremented is not
    /// exposed yet and reads 0, as Prometheus treats it. Only for checks that expect it to
    /// grow, which a renamed (so always missing) series cannot pass; an expected 0 is read
    /// with `value`, from a series the daemon exposes from the start.
    pub fn counter(&self, series: &str) -> f64 {
        self.sample(series).unwrap_or(0.0)
    }

    fn sample(&self, series: &str) -> Option<f64> {
        let prefix = format!("{series} ");
        let value = self.body.lines().find_map(|line| line.strip_prefix(&prefix))?;
        Some(value.trim().parse().unwrap_or_else(|_| panic!("{series}: not a number: {value}")))
    }
}

pub async fn get(address: SocketAddr, path: &str) -> Scraped {
    let mut stream = TcpStream::connect(address).await.expect("connect to the metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read the metrics response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP response: {raw}"));
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("status code");
    let content_type = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    Scraped { status, content_type, body: body.to_owned() }
}

pub async fn scrape(address: SocketAddr) -> Scraped {
    let scraped = get(address, "/metrics").await;
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    scraped
}
