//! pullgate reads image names exactly as containerd does, or refuses them.
//!
//! containerd's CRI plugin parses every PullImage name with distribution/reference
//! (`ParseDockerRef`). `tests/refdiff` is a small Go program around that very package, at the
//! version containerd v2 requires; this test builds it, feeds it thousands of generated
//! names, and checks pullgate's parser against it:
//!
//! - wherever pullgate accepts a name, containerd accepts it too, with the same host (as
//!   written), repository, tag and digest, and the reference pullgate forwards (pinned or
//!   tagged) is exactly the one containerd makes of the name;
//! - wherever containerd refuses, pullgate refuses;
//! - where only pullgate refuses, it is one of its deliberate refusals (capitalised or
//!   ambiguous hosts, ports containerd cannot dial, Hub short names on Hub's other hosts,
//!   digests it does not support).
//!
//! The names are built from pieces that have tripped parsers before (hosts in odd case, ports
//! with leading zeros, IPv6 literals, localhost, Docker Hub's host names, separators doubled,
//! tag and digest together, overlong names, non-ASCII look-alikes), then mutated at random
//! with a fixed seed, so a failure names an input that reproduces.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pullgate::reference::{ImageRef, ReferenceError};
use serde_json::Value;

/// Generated names per run, on top of the fixed cases.
const GENERATED: usize = 20_000;
const SEED: u64 = 0x5eed_0fc0_ffee;
/// Examples shown of each kind of refusal only pullgate makes.
const EXAMPLES: usize = 4;
const HEX64: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// === containerd's parser, built from tests/refdiff ===

fn go() -> PathBuf {
    let local = Path::new("/usr/local/go/bin/go");
    if local.exists() { local.to_owned() } else { PathBuf::from("go") }
}

/// Builds the helper into the target dir every time: Go's build cache makes that quick, and a
/// stale helper could never be run by mistake.
fn helper() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/refdiff");
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join("refdiff").join("refdiff");
    let out = Command::new(go())
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly")
        .output()
        .expect("run go build (Go must be installed, see tests/lab/lab.sh)");
    assert!(out.status.success(), "go build of tests/refdiff failed:\n{}", String::from_utf8_lossy(&out.stderr));
    binary
}

/// containerd's reading of each name, in order.
fn containerd_readings(names: &[String]) -> Vec<Value> {
    let mut child = Command::new(helper())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start refdiff");
    let mut input = String::new();
    for name in names {
        input.push_str(&serde_json::to_string(name).expect("JSON string"));
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).expect("write names"));
    let out = child.wait_with_output().expect("refdiff output");
    writer.join().expect("writer thread");
    assert!(out.status.success(), "refdiff failed: {}", String::from_utf8_lossy(&out.stderr));
    let readings: Vec<Value> = String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(readings.len(), names.len(), "one reading per name");
    readings
}

// === comparison ===

fn field<'a>(reading: &'a Value, name: &str) -> &'a str {
    reading[name].as_str().unwrap_or("")
}

/// None when pullgate reads `name` as containerd does; otherwise what differs.
fn disagreement(name: &str, image: &ImageRef, reading: &Value) -> Option<String> {
    if reading["accepted"] != Value::Bool(true) {
        return Some(format!("containerd refuses it ({}), pullgate accepts {image}", field(reading, "error")));
    }
    let ours = [
        ("host", image.registry().as_str().to_owned()),
        ("path", image.repository().to_owned()),
        ("tag", image.tag().unwrap_or_default().to_owned()),
        ("digest", image.digest().map(ToString::to_string).unwrap_or_default()),
    ];
    for (key, value) in ours {
        if field(reading, key) != value {
            return Some(format!("{key}: containerd {:?}, pullgate {value:?}", field(reading, key)));
        }
    }
    // What pullgate forwards: the pinned digest, or the tag (":latest" when none was named).
    let forwarded = match image.pinned() {
        Some(pinned) => pinned,
        None => ImageRef::parse_for_pull(name).map(|i| i.to_string()).unwrap_or_default(),
    };
    (field(reading, "pinned") != forwarded)
        .then(|| format!("forwarded as {forwarded:?}, containerd would make it {:?}", field(reading, "pinned")))
}

/// The refusals pullgate makes on purpose where containerd would go ahead.
fn deliberate(error: &ReferenceError) -> bool {
    use ReferenceError::*;
    matches!(
        error,
        CapitalisedRegistry(_)
            | AmbiguousHost { .. }
            | InvalidPort(_)
            | HubShortName(_)
            | InvalidRegistry(_)
            | InvalidDigest(_)
    )
}

fn kind(error: &ReferenceError) -> String {
    format!("{error:?}").split(['(', ' ']).next().unwrap_or_default().to_owned()
}

#[test]
fn pullgate_reads_names_as_containerd_does_or_refuses_them() {
    let mut names = fixed_cases();
    let mut rng = Rng(SEED);
    names.extend((0..GENERATED).map(|_| generate(&mut rng)));
    let readings = containerd_readings(&names);

    let mut disagreements = Vec::new();
    let mut stricter: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    let mut both = Coverage::default();
    for (name, reading) in names.iter().zip(&readings) {
        match name.parse::<ImageRef>() {
            Ok(image) => match disagreement(name, &image, reading) {
                Some(why) => disagreements.push(format!("{name:?}: {why}")),
                None => both.count(&image),
            },
            Err(error) if reading["accepted"] == Value::Bool(true) => {
                if !deliberate(&error) {
                    disagreements.push(format!("{name:?}: containerd accepts, pullgate refuses: {error}"));
                }
                let entry = stricter.entry(kind(&error)).or_default();
                entry.0 += 1;
                if entry.1.len() < EXAMPLES {
                    entry.1.push(name.clone());
                }
            }
            Err(_) => {}
        }
    }
    eprintln!("{} names; read alike by both: {both:?}", names.len());
    eprintln!("refused by pullgate only (kind: count, examples): {stricter:#?}");
    assert!(disagreements.is_empty(), "{} disagreements, first ones:\n{}", disagreements.len(), {
        disagreements.truncate(30);
        disagreements.join("\n")
    });
    both.assert_broad();
}

/// What kinds of names both parsers accepted alike: evidence that the generator reaches them.
#[derive(Debug, Default)]
struct Coverage {
    total: usize,
    hub: usize,
    ported: usize,
    leading_zero_port: usize,
    ipv6: usize,
    loopback: usize,
    tagged_and_digested: usize,
}

impl Coverage {
    fn count(&mut self, image: &ImageRef) {
        let host = image.registry().as_str();
        self.total += 1;
        self.hub += usize::from(host == "docker.io");
        self.ported += usize::from(host.rsplit_once(':').is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())));
        self.leading_zero_port += usize::from(host.contains(":0"));
        self.ipv6 += usize::from(host.starts_with('['));
        self.loopback += usize::from(image.registry().canonical().starts_with("localhost"));
        self.tagged_and_digested += usize::from(image.tag().is_some() && image.digest().is_some());
    }

    fn assert_broad(&self) {
        let counts =
            [self.hub, self.ported, self.leading_zero_port, self.ipv6, self.loopback, self.tagged_and_digested];
        assert!(self.total >= GENERATED / 5, "too few names accepted by both to mean much: {self:?}");
        assert!(counts.iter().all(|&n| n >= 20), "the generator misses a kind of name: {self:?}");
    }
}

// === names ===

/// The spellings the issues name, and their neighbours.
fn fixed_cases() -> Vec<String> {
    let cases = [
        "Docker.io/nginx",
        "DOCKER.IO/library/nginx",
        "docker.io/nginx",
        "index.docker.io/nginx",
        "Index.docker.io/nginx",
        "index.docker.io:443/nginx",
        "registry-1.docker.io/nginx",
        "registry-1.docker.io/library/nginx:1",
        "registry-1.docker.io:443/library/nginx",
        "127.0.0.1:08123/other/x:v1",
        "127.0.0.1:8123/other/x:v1",
        "localhost:8123/other/x:v1",
        "Localhost:8123/other/x:v1",
        "localhost/x",
        "localhost",
        "localhost:5000",
        "[0::1]:5000/x",
        "[::1]:5000/x",
        "[::ffff:127.0.0.1]:5000/x",
        "[::ffff:7f00:1]:5000/x",
        "[fe80::1%eth0]:5000/x",
        "127.000.000.001:5000/x",
        "127.1:5000/x",
        "0x7f.0.0.1:5000/x",
        "host:99999/x",
        "host:/x",
        "host:0/x",
        "Host/x",
        "nginx:latest",
        "nginx@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "user:pw@host/x",
        "a/b:c/d",
        "a//b",
        "-a/b",
        "a/b__c",
        "a/b___c",
        "a/b.-c",
        "a/b--c",
    ];
    let mut names: Vec<String> = cases.iter().map(|s| (*s).to_owned()).collect();
    names.push(HEX64.to_owned());
    names.push(format!("r.io/a:v1@sha256:{HEX64}"));
    names.push(format!("r.io/a@sha256:{}", HEX64.to_uppercase()));
    names.push(format!("r.io/a@sha384:{HEX64}{}", &HEX64[..32]));
    names.push(format!("r.io/a@sha512:{HEX64}{HEX64}"));
    names.push(format!("r.io/{}", "a".repeat(250)));
    names.push(format!("r.io/{}", "a".repeat(251)));
    names.push(format!("{}.io/a", "h".repeat(70)));
    names
}

/// splitmix64: a fixed seed gives the same names on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Most pieces are well formed, so that most names get far into both parsers; each piece is
/// odd now and then.
const ODD_PERCENT: usize = 12;

fn generate(rng: &mut Rng) -> String {
    let mut name = String::new();
    if rng.chance(75) {
        name.push_str(&host(rng));
        name.push('/');
    }
    name.push_str(&path(rng));
    if rng.chance(50) {
        name.push(':');
        name.push_str(&tag(rng));
    }
    if rng.chance(35) {
        name.push('@');
        name.push_str(&digest(rng));
    }
    if rng.chance(8) {
        mutate(rng, &mut name);
    }
    name
}

fn host(rng: &mut Rng) -> String {
    let odd = rng.chance(ODD_PERCENT);
    let name = match rng.below(10) {
        0 if odd => rng.pick(&["Docker.io", "INDEX.docker.io", "Registry-1.docker.io", "docker.io."]).to_owned(),
        0 => rng.pick(&["docker.io", "index.docker.io", "registry-1.docker.io"]).to_owned(),
        1 if odd => rng.pick(&["LocalHost", "a.localhost", "localhost.localdomain", "Localhost"]).to_owned(),
        1 => "localhost".to_owned(),
        2 => ipv4(rng, odd),
        3 => ipv6(rng, odd),
        _ => (0..1 + rng.below(3)).map(|_| label(rng, odd)).collect::<Vec<_>>().join("."),
    };
    let odd = rng.chance(ODD_PERCENT);
    match rng.below(10) {
        0..=3 => name,
        4 if odd => format!("{name}:{}", rng.pick(&["0", "00", "", "65536", "99999999999999999999", "+1", "1a"])),
        4 => format!("{name}:{}", rng.pick(&["443", "0443", "80", "65535", "5000", "00005000"])),
        5 => format!("{name}:0{}", rng.below(70_000)),
        _ => format!("{name}:{}", 1 + rng.below(65_535)),
    }
}

fn ipv4(rng: &mut Rng, odd: bool) -> String {
    let octet = |rng: &mut Rng| match rng.below(6) {
        0 if odd => format!("0{}", rng.below(256)),
        1 if odd => format!("0x{:x}", rng.below(256)),
        2 if odd => format!("{}", rng.below(400)),
        _ => format!("{}", rng.below(256)),
    };
    match rng.below(6) {
        0 | 1 => format!("127.0.0.{}", rng.below(3)),
        2 if odd => format!("{}.{}", octet(rng), octet(rng)),
        3 if odd => format!("{}", rng.next() % 5_000_000_000),
        _ => (0..4).map(|_| octet(rng)).collect::<Vec<_>>().join("."),
    }
}

fn ipv6(rng: &mut Rng, odd: bool) -> String {
    let literal = if odd {
        rng.pick(&["::", "::ffff:127.0.0.1", "2001:DB8::1", "fe80::1%eth0", "1::2::3", "12345::1", "", "g::1", "::1:"])
    } else {
        rng.pick(&[
            "::1",
            "0::1",
            "0:0:0:0:0:0:0:1",
            "::ffff:7f00:1",
            "::ffff:a01:203",
            "2001:db8::1",
            "2001:0db8:0000::1",
        ])
    };
    format!("[{literal}]")
}

fn label(rng: &mut Rng, odd: bool) -> String {
    if odd && rng.chance(20) {
        return "l".repeat(60 + rng.below(8));
    }
    let alphabet: &[&str] =
        if odd { &["a", "z", "0", "-", "_", "A", "é"] } else { &["a", "b", "r", "0", "9", "-", "x"] };
    let len = 1 + rng.below(8);
    let mut out: String = (0..len).map(|_| rng.pick(alphabet)).collect();
    if !odd {
        // Hyphens may not start or end a label; leave that to the odd ones.
        out = out.trim_matches('-').to_owned();
        if out.is_empty() {
            out.push('r');
        }
    }
    out
}

fn path(rng: &mut Rng) -> String {
    if rng.chance(1) {
        return HEX64.to_owned();
    }
    let components = 1 + rng.below(4);
    let mut parts: Vec<String> = (0..components).map(|_| component(rng)).collect();
    if rng.chance(3) {
        parts.push("a".repeat(230 + rng.below(40)));
    }
    if rng.chance(2) {
        parts.insert(rng.below(parts.len() + 1), String::new());
    }
    parts.join("/")
}

fn component(rng: &mut Rng) -> String {
    let odd = rng.chance(ODD_PERCENT);
    let separators: &[&str] = if odd { &["___", "._", "..", "-_", "/"] } else { &[".", "_", "__", "-", "---"] };
    let letters: &[&str] = if odd { &["a", "A", "é", "0"] } else { &["a", "n", "g", "x", "0", "7"] };
    let runs = 1 + rng.below(3);
    let mut out = String::new();
    for i in 0..runs {
        if i > 0 {
            out.push_str(rng.pick(separators));
        }
        out.extend((0..1 + rng.below(6)).map(|_| rng.pick(letters)));
    }
    if odd && rng.chance(30) {
        out.insert_str(0, rng.pick(&["-", "_", "."]));
    }
    out
}

fn tag(rng: &mut Rng) -> String {
    let odd = rng.chance(ODD_PERCENT);
    let first: &[&str] = if odd { &[".", "-", "", "é"] } else { &["v", "1", "_", "L"] };
    let rest = ["v", "1", "_", ".", "-", "L", "a", "0"];
    let len = match rng.below(10) {
        0 => 127 + rng.below(2),
        _ => rng.below(10),
    };
    let mut out = rng.pick(first).to_owned();
    out.extend((0..len).map(|_| rng.pick(&rest)));
    out
}

fn digest(rng: &mut Rng) -> String {
    if !rng.chance(ODD_PERCENT * 2) {
        return format!("sha256:{HEX64}");
    }
    match rng.below(6) {
        0 => format!("sha256:{}", HEX64.to_uppercase()),
        1 => format!("sha256:{}", &HEX64[..63]),
        2 => format!("sha384:{HEX64}{}", &HEX64[..32]),
        3 => format!("sha512:{HEX64}{HEX64}"),
        4 => format!("md5:{HEX64}"),
        _ => "sha256:".to_owned(),
    }
}

fn flip_case(rng: &mut Rng, text: &str) -> String {
    text.chars().map(|c| if rng.chance(30) { c.to_ascii_uppercase() } else { c }).collect()
}

/// One random edit: a character inserted, deleted or replaced, or the case flipped.
fn mutate(rng: &mut Rng, name: &mut String) {
    let chars: Vec<char> = name.chars().collect();
    let at = rng.below(chars.len() + 1);
    let odd = ['/', ':', '@', '.', '_', '-', '[', ']', 'K', 'é', '\u{212a}', 'İ', ' ', '\t', '0', 'Ａ'];
    let c = odd[rng.below(odd.len())];
    let mut out = chars.clone();
    match rng.below(4) {
        0 => out.insert(at, c),
        1 if at < out.len() => {
            out.remove(at);
        }
        2 if at < out.len() => out[at] = c,
        _ => out = flip_case(rng, name).chars().collect(),
    }
    *name = out.into_iter().collect();
}
