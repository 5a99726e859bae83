//! Policy files from arbitrary bytes: loading reports problems, never panics. The first byte
//! picks the format (even: a policy.d TOML file, odd: containers-policy.json); a real public
//! key `a.pub` sits beside the file so that rules naming it get past key loading.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pullgate::policy::Policy;

const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8/ZpegPM/pwr+atCRHnGJ0awKKot
NaLjqL1aKjP2VHM7/sdhFkPxgr5+E64h7cASz5Gvi8jxKd3oW+bHXMWwaQ==
-----END PUBLIC KEY-----
";

fn dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("policy.d")).expect("policy.d");
        std::fs::write(dir.path().join("policy.d/a.pub"), KEY).expect("a.pub");
        std::fs::write(dir.path().join("a.pub"), KEY).expect("a.pub");
        dir
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else { return };
    let (policy_d, json) = (dir().join("policy.d"), dir().join("policy.json"));
    let toml = policy_d.join("policy.toml");
    let loaded = if selector % 2 == 0 {
        std::fs::write(&toml, text).expect("write policy.toml");
        Policy::load(&policy_d, None)
    } else {
        let _ = std::fs::remove_file(&toml);
        std::fs::write(&json, text).expect("write policy.json");
        Policy::load(&policy_d, Some(&json))
    };
    if let Err(error) = loaded {
        assert!(!error.to_string().is_empty());
    }
});
