//! docs/policy.md, checked: every policy example on the page loads (or fails with exactly the
//! error the page shows), and its verdict table is what pullgate's decision code decides.
//!
//! The page follows these conventions, which this test relies on:
//! - Headings delimit sections. The ```toml blocks of one section are the files of one policy
//!   directory; each starts with `# /etc/pullgate/policy.d/NAME.toml`.
//! - Each ```json block is a containers-policy.json, loaded alone (with an empty policy dir).
//! - A ```text block starting with "invalid policy" is the exact error of the block before it
//!   (of its section's policy, for a toml block); every other example must load.
//! - `/etc/` in examples stands for a temp dir; every `*.pub` path an example names gets a
//!   fresh key, known in the verdict table by its file stem.
//! - A table whose header starts with `| Image pulled |` is decided, row by row, by `Gate` under
//!   its section's policy, against an in-memory registry holding signatures the real cosign
//!   made (`cosign sign-blob` of the payload `cosign sign` writes).

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::cosign::{self, CosignKey};
use pullgate::decision::{Gate, PullGate, PullRequest, Verdict};
use pullgate::policy::{Mode, Policy, PolicyError, SharedPolicy};
use pullgate::reference::{Digest, ImageRef};
use pullgate::registry::{Credentials, Manifest, Registry, RegistryError};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/policy.md");
const POLICY_DIR_PREFIX: &str = "# /etc/pullgate/policy.d/";
const TABLE_HEADER: &str = "| Image pulled |";
const DIGEST_PLACEHOLDER: &str = "sha256:…";

// === reading the page ===

#[derive(Debug)]
struct Block {
    section: usize,
    lang: String,
    text: String,
}

#[derive(Default)]
struct Page {
    blocks: Vec<Block>,
    /// (section, rows of cells), header and separator dropped.
    tables: Vec<(usize, Vec<Vec<String>>)>,
}

fn read_page() -> Page {
    let text = std::fs::read_to_string(DOC).expect("read docs/policy.md");
    let mut page = Page::default();
    let mut section = 0;
    let mut fence: Option<(String, String)> = None;
    let mut table: Option<Vec<Vec<String>>> = None;
    for line in text.lines() {
        if let Some((lang, body)) = &mut fence {
            if line.starts_with("```") {
                let (lang, text) = (std::mem::take(lang), std::mem::take(body));
                page.blocks.push(Block { section, lang, text });
                fence = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
            continue;
        }
        if let Some(rows) = table.as_mut().filter(|_| line.starts_with('|')) {
            if !line.starts_with("|---") {
                rows.push(cells(line));
            }
            continue;
        }
        if let Some(rows) = table.take() {
            page.tables.push((section, rows));
        }
        if let Some(lang) = line.strip_prefix("```") {
            fence = Some((lang.trim().to_owned(), String::new()));
        } else if line.starts_with('#') {
            section += 1;
        } else if line.starts_with(TABLE_HEADER) {
            table = Some(Vec::new());
        }
    }
    assert!(fence.is_none(), "unterminated code block in docs/policy.md");
    page.tables.extend(table.map(|rows| (section, rows)));
    page
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_owned()).collect()
}

// === one example: a policy dir and maybe a policy.json, under a temp dir standing in for /etc ===

/// What one example is made of, and the error the page says it gives (None: it must load).
struct Example {
    toml: Vec<String>,
    json: Option<String>,
    expected_error: Option<String>,
    section: usize,
}

/// Groups the page's blocks into examples and attaches expected errors.
fn examples(page: &Page) -> Vec<Example> {
    let mut examples: Vec<Example> = Vec::new();
    let mut last: Option<usize> = None;
    for block in &page.blocks {
        match block.lang.as_str() {
            "toml" => {
                let found = examples.iter().position(|e| e.section == block.section && e.json.is_none());
                let index = found.unwrap_or_else(|| {
                    examples.push(Example {
                        toml: Vec::new(),
                        json: None,
                        expected_error: None,
                        section: block.section,
                    });
                    examples.len() - 1
                });
                examples[index].toml.push(block.text.clone());
                last = Some(index);
            }
            "json" => {
                examples.push(Example {
                    toml: Vec::new(),
                    json: Some(block.text.clone()),
                    expected_error: None,
                    section: block.section,
                });
                last = Some(examples.len() - 1);
            }
            "text" if block.text.starts_with("invalid policy") => {
                let index = last.filter(|i| examples[*i].section == block.section);
                let index = index.expect("an expected error must follow its example in the same section");
                examples[index].expected_error = Some(block.text.trim_end().to_owned());
            }
            _ => {}
        }
    }
    examples
}

impl Example {
    /// How failures name the example: its first line, which names its first file.
    fn name(&self) -> String {
        let first = self.toml.first().or(self.json.as_ref()).and_then(|t| t.lines().next());
        format!("example at {:?} (section {})", first.unwrap_or_default(), self.section)
    }
}

struct Materialised {
    etc: tempfile::TempDir,
    keys: HashMap<String, CosignKey>,
}

impl Materialised {
    fn etc(&self) -> &Path {
        self.etc.path()
    }

    fn policy_dir(&self) -> PathBuf {
        self.etc().join("pullgate/policy.d")
    }

    /// The example's text with `/etc/` pointing into the temp dir.
    fn localise(&self, text: &str) -> String {
        text.replace("/etc/", &format!("{}/", self.etc().display()))
    }

    /// An error message with the temp dir turned back into `/etc`, as the page shows it.
    fn globalise(&self, text: &str) -> String {
        text.replace(&self.etc().display().to_string(), "/etc")
    }

    fn load(&self, example: &Example) -> Result<Policy, PolicyError> {
        let json = example.json.as_ref().map(|_| self.etc().join("containers/policy.json"));
        Policy::load(&self.policy_dir(), json.as_deref())
    }
}

fn materialise(example: &Example) -> Materialised {
    let mut m = Materialised { etc: tempfile::tempdir().expect("temp dir"), keys: HashMap::new() };
    std::fs::create_dir_all(m.policy_dir()).expect("policy dir");
    for text in &example.toml {
        let first = text.lines().next().unwrap_or_default();
        // The file name is the first word; a remark may follow it.
        let name = first
            .strip_prefix(POLICY_DIR_PREFIX)
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|name| name.ends_with(".toml"))
            .unwrap_or_else(|| panic!("a toml example must start with `{POLICY_DIR_PREFIX}NAME.toml`, not {first:?}"));
        let path = m.policy_dir().join(name);
        assert!(!path.exists(), "two examples in one section are both named {name}");
        write_with_keys(&mut m, &path, text);
    }
    if let Some(text) = &example.json {
        let path = m.etc().join("containers/policy.json");
        write_with_keys(&mut m, &path, text);
    }
    m
}

/// Writes the example to `path` and a fresh public key for every `*.pub` it names.
fn write_with_keys(m: &mut Materialised, path: &Path, text: &str) {
    let text = m.localise(text);
    let dir = path.parent().expect("file in a dir");
    std::fs::create_dir_all(dir).expect("create dir");
    std::fs::write(path, &text).expect("write example");
    for key_path in text.split('"').filter(|s| s.ends_with(".pub")) {
        let key_path = dir.join(key_path);
        if key_path.exists() {
            continue;
        }
        std::fs::create_dir_all(key_path.parent().expect("key in a dir")).expect("create key dir");
        let key = CosignKey::generate();
        key.write_public_pem(&key_path);
        let stem = key_path.file_stem().expect("stem").to_string_lossy().into_owned();
        assert!(m.keys.insert(stem.clone(), key).is_none(), "two key files named {stem}.pub");
    }
}

// === the verdict table ===

/// An in-memory registry: manifests by (repository name, tag or digest), blobs by digest.
#[derive(Default)]
struct MemRegistry {
    manifests: HashMap<(String, String), Manifest>,
    blobs: HashMap<Digest, Bytes>,
}

impl Registry for MemRegistry {
    async fn manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        _: &Credentials,
    ) -> Result<Option<Manifest>, RegistryError> {
        Ok(self.manifests.get(&(image.name(), reference.to_owned())).cloned())
    }

    async fn blob(&self, _: &ImageRef, digest: &Digest, _: usize, _: &Credentials) -> Result<Bytes, RegistryError> {
        self.blobs.get(digest).cloned().ok_or_else(|| RegistryError::Unreachable(format!("no blob {digest}")))
    }
}

struct Row {
    image: String,
    namespace: Option<String>,
    /// (key stem, the repository the signature names; None: the pulled one, as cosign does).
    signatures: Vec<(String, Option<String>)>,
    rule_scope: Option<String>,
    result: String,
}

fn unquote(cell: &str) -> String {
    cell.replace('`', "")
}

fn parse_row(cells: &[String], digest: &Digest) -> Row {
    assert_eq!(cells.len(), 6, "verdict table row {cells:?}");
    let signatures = match unquote(&cells[2]).as_str() {
        "none" => Vec::new(),
        list => list
            .split(" + ")
            .map(|entry| match entry.split_once(" for ") {
                Some((key, repo)) => (key.trim().to_owned(), Some(repo.trim().to_owned())),
                None => (entry.trim().to_owned(), None),
            })
            .collect(),
    };
    let rule_scope = cells[3].split('`').nth(1).map(str::to_owned);
    Row {
        image: unquote(&cells[0]).replace(DIGEST_PLACEHOLDER, &digest.to_string()),
        namespace: Some(unquote(&cells[1])).filter(|ns| ns != "none"),
        signatures,
        rule_scope,
        result: cells[4].clone(),
    }
}

/// A registry holding the row's image and its signatures.
fn registry_for(row: &Row, image: &ImageRef, keys: &HashMap<String, CosignKey>) -> MemRegistry {
    let mut registry = MemRegistry::default();
    let bytes = Bytes::from(format!("{{\"schemaVersion\":2,\"image\":{:?}}}", row.image));
    let digest = image.digest().cloned().unwrap_or_else(|| Digest::sha256_of(&bytes));
    let reference = image.tag().map_or_else(|| digest.to_string(), str::to_owned);
    let media_type = cosign::OCI_MANIFEST_MEDIA_TYPE.to_owned();
    let manifest = Manifest { bytes, media_type, digest: digest.clone(), host: String::new() };
    registry.manifests.insert((image.name(), reference), manifest);
    if row.signatures.is_empty() {
        return registry;
    }
    let sigs: Vec<(Vec<u8>, Vec<u8>)> = row
        .signatures
        .iter()
        .map(|(stem, repo)| {
            let key = keys.get(stem).unwrap_or_else(|| panic!("no key file {stem}.pub in the example"));
            let payload = cosign::payload(repo.as_deref().unwrap_or(&image.name()), &digest.to_string());
            let signature = key.sign_blob(&payload);
            (payload, signature)
        })
        .collect();
    let artifact = cosign::signature_manifest(&sigs);
    let sig_bytes = Bytes::from(artifact.manifest.clone());
    let sig_manifest = Manifest {
        digest: Digest::sha256_of(&sig_bytes),
        bytes: sig_bytes,
        media_type: artifact.media_type.clone(),
        host: String::new(),
    };
    let tag = format!("{}-{}.sig", digest.algorithm(), digest.hex());
    registry.manifests.insert((image.name(), tag), sig_manifest);
    for blob in artifact.blobs {
        registry.blobs.insert(Digest::sha256_of(&blob), Bytes::from(blob));
    }
    registry
}

/// Decides one row and returns a description of any disagreement with the page.
async fn check_row(policy: &Policy, keys: &HashMap<String, CosignKey>, row: &Row) -> Option<String> {
    let image = ImageRef::parse_for_pull(&row.image).expect("table image parses");
    let registry = Arc::new(registry_for(row, &image, keys));
    let gate = Gate::new(SharedPolicy::new(policy.clone()), registry, Duration::from_secs(5));
    let pull = PullRequest { image: row.image.clone(), namespace: row.namespace.clone(), ..Default::default() };
    let decision = gate.decide(&pull).await;
    let admitted = gate.admit(&pull).await.is_ok();
    let scope = decision.rule.as_ref().map(|r| r.scope.to_string());
    println!("{} in {:?}: {:?} by {scope:?}: {}", row.image, row.namespace, decision.verdict, decision.reason);
    let audit = row.result.contains("audit");
    let expected_admitted = row.result.starts_with("pulled");
    let ok = scope == row.rule_scope
        && admitted == expected_admitted
        && (!audit || (decision.mode() == Some(Mode::Audit) && decision.verdict == Verdict::Rejected))
        && (row.result.starts_with("pulled") || row.result.starts_with("refused"));
    (!ok).then(|| {
        format!(
            "{} in {:?}: page says rule {:?}, {:?}; pullgate used {scope:?}, admitted={admitted}, {:?} ({})",
            row.image, row.namespace, row.rule_scope, row.result, decision.verdict, decision.reason
        )
    })
}

// === the tests ===

#[test]
fn every_example_loads_or_fails_as_shown() {
    let page = read_page();
    let examples = examples(&page);
    let mut failures = Vec::new();
    for example in &examples {
        let m = materialise(example);
        let outcome = m.load(example).map_err(|e| m.globalise(&e.to_string()));
        let what = example.name();
        match (outcome, &example.expected_error) {
            (Ok(policy), None) => assert!(!policy.is_empty(), "{what} has no rules"),
            (Err(got), Some(expected)) if got == *expected => {}
            (Err(got), expected) => failures.push(format!("{what}: got\n{got}\nexpected\n{expected:?}")),
            (Ok(_), Some(expected)) => failures.push(format!("{what} loaded, expected\n{expected}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Guards against the conventions silently breaking, which would make this test vacuous.
    let toml_files: usize = examples.iter().map(|e| e.toml.len()).sum();
    let broken = examples.iter().filter(|e| e.expected_error.is_some()).count();
    let json = examples.iter().filter(|e| e.json.is_some()).count();
    assert!(
        toml_files >= 12 && broken >= 2 && json >= 2,
        "found {toml_files} toml files, {broken} broken, {json} json"
    );
}

#[tokio::test]
async fn verdict_table_matches_the_decisions() {
    let page = read_page();
    assert_eq!(page.tables.len(), 1, "docs/policy.md has one verdict table");
    let (section, rows) = &page.tables[0];
    let examples = examples(&page);
    let example = examples
        .iter()
        .find(|e| e.section == *section && e.json.is_none())
        .expect("the verdict table's section has a toml policy");
    let m = materialise(example);
    let policy = m.load(example).unwrap_or_else(|e| panic!("{e}"));
    let digest = Digest::sha256_of(b"docs/policy.md example digest");
    let mut disagreements = Vec::new();
    for cells in rows {
        let row = parse_row(cells, &digest);
        disagreements.extend(check_row(&policy, &m.keys, &row).await);
    }
    assert!(rows.len() >= 10, "only {} rows", rows.len());
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
