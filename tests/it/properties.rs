//! Property tests for everything pullgate parses from outside: image references (kubelet),
//! policy files (operator), signature manifests and payloads (registry), and the PullImage
//! wire rewrite (kubelet). Each property runs on random input and on input built from a
//! grammar of near-valid documents, so that the deep paths are reached too.
//!
//! Cases per property: proptest's default of 256, or `PROPTEST_CASES` (see docs/fuzzing.md).
//! The coverage-guided fuzz targets for the same parsers are in `fuzz/`.

use std::path::Path;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use proptest::prelude::*;
use proptest::sample::select;
use prost::Message as _;
use pullgate::cri::proto::{AuthConfig, ImageSpec, PodSandboxConfig, PodSandboxMetadata, PullImageRequest};
use pullgate::cri::wire::{WireError, pull_image_name, rewrite_pull_image};
use pullgate::policy::{Policy, PolicyError};
use pullgate::reference::{Digest, ImageRef};
use pullgate::registry::media_type::OCI_MANIFEST;
use pullgate::verify::signatures::{
    MAX_SIGNATURE_LAYERS, ManifestError, SIGNATURE_ANNOTATION, SIMPLESIGNING_MEDIA_TYPE, parse_signature_manifest,
};
use pullgate::verify::{PayloadError, SignedPayload};
use serde_json::{Value, json};

const DIGEST: &str = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

// === image references ===

/// Reference-shaped text: optional host[:port], path components, optional tag and digest,
/// with the characters that sit on the grammar's edges mixed in.
fn reference_like() -> impl Strategy<Value = String> {
    let host =
        "(([a-zA-Z0-9-]{1,8}\\.)?[a-zA-Z0-9-]{1,8}(:[0-9]{0,6})?/|localhost/|\\[[0-9a-f:]{1,8}\\](:[0-9]{1,5})?/)?";
    let path = "[a-zA-Z0-9._-]{1,10}(/[a-z0-9._-]{0,8}){0,3}";
    let tag = "(:[A-Za-z0-9_.-]{0,12})?";
    let digest = "(@sha(256|512):[0-9a-fA-F]{62,66})?";
    proptest::string::string_regex(&format!("{host}{path}{tag}{digest}")).expect("valid regex")
}

fn assert_round_trips(text: &str) -> Result<(), TestCaseError> {
    if let Ok(image) = text.parse::<ImageRef>() {
        let shown = image.to_string();
        prop_assert_eq!(shown.parse::<ImageRef>(), Ok(image.clone()), "{:?} shown as {:?}", text, shown);
        // Equality is by canonical registry; the host as written must survive too.
        prop_assert_eq!(shown.parse::<ImageRef>().map(|i| i.to_string()), Ok(shown.clone()));
        if let Some(pinned) = image.pinned() {
            prop_assert!(pinned.parse::<ImageRef>().is_ok(), "{:?} pinned as {:?}", text, pinned);
        }
    }
    if let Ok(image) = ImageRef::parse_for_pull(text) {
        prop_assert!(image.tag().is_some() || image.digest().is_some());
        prop_assert_eq!(ImageRef::parse_for_pull(&image.to_string()), Ok(image.clone()));
    }
    if let Ok(digest) = text.parse::<Digest>() {
        prop_assert_eq!(digest.to_string().parse::<Digest>(), Ok(digest.clone()));
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_text_parses_or_fails_cleanly_as_a_reference(text in any::<String>()) {
        assert_round_trips(&text)?;
    }

    #[test]
    fn reference_shaped_text_round_trips_through_display(text in reference_like()) {
        assert_round_trips(&text)?;
    }
}

// === policy files ===

/// A policy directory holding one real public key, `a.pub`, reused by every case.
fn policy_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let pem = key.verifying_key().to_public_key_pem(LineEnding::LF).expect("encode key");
        std::fs::write(dir.path().join("a.pub"), pem).expect("write key");
        dir
    })
    .path()
}

/// Loads `toml` as the only policy file (and `json` as policy.json); Err when the policy was
/// refused. Each proptest case runs on one thread, so the fixed file names are not raced.
/// A refusal must say where: at least one problem, each naming a file in the policy directory,
/// with a line inside that file when it names one, and a reason.
fn load_policy(name: &str, toml: &[u8], json: Option<&[u8]>) -> Result<Result<(), PolicyError>, TestCaseError> {
    let dir = policy_dir().join(name);
    std::fs::create_dir_all(&dir).expect("case dir");
    std::fs::copy(policy_dir().join("a.pub"), dir.join("a.pub")).expect("copy key");
    let (toml_path, json_path) = (dir.join("policy.toml"), dir.join("policy.json"));
    std::fs::write(&toml_path, toml).expect("write policy");
    if let Some(json) = json {
        std::fs::write(&json_path, json).expect("write policy.json");
    }
    let Err(error) = Policy::load(&dir, json.map(|_| json_path.as_path())) else { return Ok(Ok(())) };
    prop_assert!(!error.problems.is_empty(), "a refusal without a problem");
    for problem in &error.problems {
        prop_assert!(problem.file.starts_with(&dir), "{problem} names a file outside the policy directory");
        prop_assert!(!problem.message.trim().is_empty(), "{problem} gives no reason");
        let text = if problem.file == toml_path {
            Some(toml)
        } else if problem.file == json_path {
            json
        } else {
            None
        };
        if let (Some(line), Some(text)) = (problem.line, text) {
            let lines = text.iter().filter(|&&b| b == b'\n').count() + 1;
            prop_assert!((1..=lines).contains(&line), "{problem}: the file has {lines} lines");
        }
    }
    Ok(Err(error))
}

fn toml_string() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "*",
            "registry.example/team",
            "*.example.com",
            "docker.io/library/nginx:1",
            "Reg.Example:5000/a@sha256:00",
            "",
            "nginx",
            "*.",
            "[::1]:5000/x"
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ]
    .prop_map(|s| serde_json::to_string(&s).expect("JSON string"))
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        toml_string(),
        prop::collection::vec(toml_string(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
        any::<i64>().prop_map(|n| n.to_string()),
        select(vec![
            "true",
            "1.5",
            "{}",
            "{ remap = { prefix = \"a.io/x\", signed_prefix = \"b.io/y\" } }",
            "{ exact-repository = \"a.io/x\" }",
            "{ remap = {} }"
        ])
        .prop_map(str::to_owned),
    ]
}

/// A `[[rule]]` table of known and unknown keys with plausible and implausible values.
fn toml_rule() -> impl Strategy<Value = String> {
    let key = select(vec!["scope", "require", "keys", "threshold", "identity", "mode", "namespaces", "scopes"]);
    let known_value = select(vec![
        "\"signed\"",
        "\"accept\"",
        "\"reject\"",
        "[\"a.pub\"]",
        "[\"a.pub\", \"a.pub\"]",
        "[\"./a.pub\", \"a.pub\"]",
        "[\"missing.pub\"]",
        "[\"policy.toml\"]",
        "\"match-repository\"",
        "\"match-exact\"",
        "\"ignore\"",
        "\"audit\"",
        "\"enforce\"",
        "[\"kube-system\"]",
        "0",
        "1",
        "2",
        "-1",
    ])
    .prop_map(str::to_owned);
    let value = prop_oneof![3 => known_value, 1 => toml_value()];
    prop::collection::vec((key, value), 0..8).prop_map(|fields| {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        format!("[[rule]]\n{}\n", body.join("\n"))
    })
}

fn json_requirement() -> impl Strategy<Value = Value> + Clone {
    let identity = select(vec![
        json!({"type": "matchRepository"}),
        json!({"type": "matchExact"}),
        json!({"type": "exactReference", "dockerReference": "a.io/x:1"}),
        json!({"type": "remapIdentity", "prefix": "a.io", "signedPrefix": "b.io"}),
        json!({"type": "exactRepository"}),
        json!(null),
    ]);
    let base = select(vec![
        json!({"type": "insecureAcceptAnything"}),
        json!({"type": "reject"}),
        json!({"type": "sigstoreSigned", "keyPath": "a.pub"}),
        json!({"type": "sigstoreSigned", "keyPaths": ["a.pub", "a.pub"]}),
        json!({"type": "sigstoreSigned", "keyData": "bm90IGEga2V5"}),
        json!({"type": "sigstoreSigned", "keyPath": "a.pub", "fulcio": null}),
        json!({"type": "signedBy", "keyType": "GPGKeys"}),
        json!({"type": 7}),
        json!({}),
    ]);
    (base, prop::option::of(identity)).prop_map(|(mut requirement, identity)| {
        if let (Some(identity), Some(object)) = (identity, requirement.as_object_mut()) {
            object.insert("signedIdentity".into(), identity);
        }
        requirement
    })
}

fn json_policy() -> impl Strategy<Value = Vec<u8>> {
    let requirements = prop::collection::vec(json_requirement(), 0..3);
    let scope = prop_oneof![
        select(vec!["", "a.io", "a.io/team", "*.a.io", "a.io/x@sha256:00", "docker.io"]).prop_map(str::to_owned),
        any::<String>()
    ];
    let scopes = prop::collection::vec((scope, requirements.clone()), 0..4);
    (requirements, scopes).prop_map(|(default, scopes)| {
        let docker: serde_json::Map<String, Value> = scopes.into_iter().map(|(s, r)| (s, Value::from(r))).collect();
        serde_json::to_vec(&json!({"default": default, "transports": {"docker": docker}})).expect("JSON")
    })
}

proptest! {
    #[test]
    fn policy_loading_survives_arbitrary_bytes(toml in prop::collection::vec(any::<u8>(), 0..512), json in prop::collection::vec(any::<u8>(), 0..512)) {
        let loaded = load_policy("bytes", &toml, Some(&json))?;
        // Fail closed: a policy.json that is not JSON is never read as "no policy.json".
        if serde_json::from_slice::<Value>(&json).is_err() {
            prop_assert!(loaded.is_err(), "loaded with a policy.json that is not JSON");
        }
        // Likewise a policy file that is not UTF-8 text.
        if std::str::from_utf8(&toml).is_err() {
            prop_assert!(loaded.is_err(), "loaded a policy file that is not UTF-8");
        }
    }

    #[test]
    fn policy_loading_survives_near_valid_files(rules in prop::collection::vec(toml_rule(), 0..4), json in prop::option::of(json_policy())) {
        let toml = rules.concat();
        let loaded = load_policy("grammar", toml.as_bytes(), json.as_deref())?;
        // A rule without a scope or a requirement is refused, never half-read.
        if rules.iter().any(|rule| !rule.contains("\nscope = ") || !rule.contains("\nrequire = ")) {
            prop_assert!(loaded.is_err(), "loaded a rule without a scope or requirement:\n{}", toml);
        }
    }
}

// === signature payloads ===

fn json_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        select(vec!["cosign container image signature", "registry.example/app", DIGEST, "sha256:ABC", ""])
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

/// A cosign document with each field present, missing, or replaced, plus stray fields.
fn payload_document() -> impl Strategy<Value = Value> {
    let field = || prop::option::of(json_text());
    (field(), field(), field(), field(), field()).prop_map(|(reference, digest, kind, stray, optional)| {
        let mut critical = json!({"identity": {}, "image": {}});
        if let Some(reference) = reference {
            critical["identity"]["docker-reference"] = reference;
        }
        if let Some(digest) = digest {
            critical["image"]["docker-manifest-digest"] = digest;
        }
        if let Some(kind) = kind {
            critical["type"] = kind;
        }
        if let Some(stray) = stray {
            critical["extra"] = stray;
        }
        json!({"critical": critical, "optional": optional})
    })
}

proptest! {
    #[test]
    fn payload_parsing_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(payload) = SignedPayload::parse(&bytes) {
            prop_assert!(payload.manifest_digest.to_string().parse::<Digest>().is_ok());
        }
    }

    #[test]
    fn payload_parsing_keeps_what_was_signed(document in payload_document()) {
        let bytes = serde_json::to_vec(&document).expect("JSON");
        let critical = &document["critical"];
        let valid = critical.get("extra").is_none()
            && critical["type"] == "cosign container image signature"
            && critical["identity"]["docker-reference"].is_string()
            && critical["image"]["docker-manifest-digest"].as_str().is_some_and(|d| d.parse::<Digest>().is_ok());
        match SignedPayload::parse(&bytes) {
            Ok(payload) => {
                prop_assert!(valid, "accepted {}", document);
                prop_assert_eq!(Some(payload.docker_reference.as_str()), critical["identity"]["docker-reference"].as_str());
                prop_assert_eq!(Some(payload.manifest_digest.as_str()), critical["image"]["docker-manifest-digest"].as_str());
            }
            Err(error) => {
                prop_assert!(!valid, "refused {}: {}", document, error);
                let too_large = matches!(error, PayloadError::TooLarge { .. });
                prop_assert!(!too_large);
            }
        }
    }
}

// === signature manifests ===

/// What the parser must make of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// A well-formed signature layer: returned.
    Returned,
    /// Another media type, or a signature layer without a signature: skipped.
    Skipped,
    /// A signature layer with a bad digest, size or signature: the manifest is refused.
    Refused,
}

/// One layer as a hostile or sloppy registry might list it, with what the parser must do.
fn manifest_layer() -> impl Strategy<Value = (Value, Expect)> {
    let media_type =
        select(vec![SIMPLESIGNING_MEDIA_TYPE, SIMPLESIGNING_MEDIA_TYPE, "application/vnd.oci.image.layer.v1.tar", ""]);
    let digest = prop_oneof![4 => Just(DIGEST.to_owned()), 1 => any::<String>()];
    let size = prop_oneof![4 => 0u64..70_000, 1 => any::<u64>()];
    let signature = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 1..80).prop_map(|sig| Some(STANDARD.encode(sig))),
        1 => Just(None),
        1 => any::<String>().prop_map(Some),
    ];
    (media_type, digest, size, signature).prop_map(|(media_type, digest, size, signature)| {
        let mut layer = json!({"mediaType": media_type, "digest": digest, "size": size});
        if let Some(signature) = &signature {
            layer["annotations"] = json!({ SIGNATURE_ANNOTATION: signature });
        }
        let sound = digest.parse::<Digest>().is_ok() && size <= pullgate::verify::MAX_PAYLOAD_BYTES as u64;
        let expect = match (media_type == SIMPLESIGNING_MEDIA_TYPE, sound, signature.as_deref()) {
            (false, ..) => Expect::Skipped,
            (true, false, _) => Expect::Refused,
            (true, true, None) => Expect::Skipped,
            (true, true, Some(s)) if STANDARD.decode(s).is_ok() => Expect::Returned,
            (true, true, Some(_)) => Expect::Refused,
        };
        (layer, expect)
    })
}

proptest! {
    #[test]
    fn signature_manifest_parsing_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048), content_type in any::<String>()) {
        let json = serde_json::from_slice::<Value>(&bytes);
        match parse_signature_manifest(&bytes, &content_type) {
            Ok(layers) => {
                let manifest = json.expect("accepted bytes that are not JSON");
                prop_assert_eq!(&manifest["schemaVersion"], &json!(2));
                prop_assert!(layers.len() <= MAX_SIGNATURE_LAYERS);
            }
            // Whatever is not JSON is refused as such, before anything else is looked at.
            Err(ManifestError::Malformed(_)) => {}
            Err(other) => prop_assert!(json.is_ok(), "{} for bytes that are not JSON", other),
        }
    }

    #[test]
    fn signature_manifest_parsing_returns_exactly_the_signature_layers(
        layers in prop::collection::vec(manifest_layer(), 0..80),
        content_type in select(vec![OCI_MANIFEST, "application/json", "", "text/html"]),
    ) {
        let values: Vec<&Value> = layers.iter().map(|(layer, _)| layer).collect();
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": values});
        let bytes = serde_json::to_vec(&manifest).expect("JSON");
        let candidates = layers.iter().filter(|(layer, _)| layer["mediaType"] == SIMPLESIGNING_MEDIA_TYPE).count();
        let count = |want: Expect| layers.iter().filter(|(_, expect)| *expect == want).count();
        match parse_signature_manifest(&bytes, content_type) {
            Ok(parsed) => {
                prop_assert!(candidates <= MAX_SIGNATURE_LAYERS && count(Expect::Refused) == 0);
                prop_assert_eq!(parsed.len(), count(Expect::Returned));
            }
            Err(ManifestError::TooManyLayers { count }) => prop_assert!(count == candidates && count > MAX_SIGNATURE_LAYERS),
            Err(ManifestError::BadLayer { .. }) => prop_assert!(candidates <= MAX_SIGNATURE_LAYERS && count(Expect::Refused) > 0),
            Err(other) => prop_assert!(false, "unexpected {}", other),
        }
    }
}

// === PullImage wire rewrite ===

fn pull_request() -> impl Strategy<Value = PullImageRequest> {
    let annotations = prop::collection::hash_map(any::<String>(), any::<String>(), 0..3);
    let spec = (any::<String>(), annotations, any::<String>(), any::<String>(), any::<String>()).prop_map(
        |(image, annotations, user, handler, image_ref)| ImageSpec {
            image,
            annotations,
            user_specified_image: user,
            runtime_handler: handler,
            image_ref,
        },
    );
    let auth = (any::<String>(), any::<String>(), any::<String>()).prop_map(|(username, password, registry_token)| {
        AuthConfig { username, password, registry_token, ..Default::default() }
    });
    let sandbox = any::<String>().prop_map(|namespace| PodSandboxConfig {
        metadata: Some(PodSandboxMetadata { name: "pod".into(), namespace, ..Default::default() }),
        ..Default::default()
    });
    (prop::option::of(spec), prop::option::of(auth), prop::option::of(sandbox))
        .prop_map(|(image, auth, sandbox_config)| PullImageRequest { image, auth, sandbox_config })
}

/// A field pullgate's copy of the CRI does not know: (number, payload), length-delimited.
fn unknown_field() -> impl Strategy<Value = Vec<u8>> {
    (4u32..100_000, prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(number, payload)| {
        let mut out = Vec::new();
        prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(payload.len() as u64, &mut out);
        out.extend_from_slice(&payload);
        out
    })
}

proptest! {
    #[test]
    fn wire_rewrite_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), image in any::<String>()) {
        if let Ok(rewritten) = rewrite_pull_image(&bytes, &image) {
            // Whatever it accepted, containerd will read the new image from what it emits.
            prop_assert_eq!(pull_image_name(&rewritten), Ok(image));
        }
    }

    #[test]
    fn wire_rewrite_changes_only_the_image(request in pull_request(), unknown in prop::option::of(unknown_field()), image in any::<String>()) {
        let mut encoded = request.encode_to_vec();
        if let Some(unknown) = &unknown {
            encoded.extend_from_slice(unknown);
        }
        let rewritten = rewrite_pull_image(&encoded, &image).map_err(|e: WireError| TestCaseError::fail(e.to_string()))?;
        let mut expected = request.clone();
        expected.image.get_or_insert_with(ImageSpec::default).image = image.clone();
        prop_assert_eq!(pull_image_name(&encoded), Ok(request.image.as_ref().map(|spec| spec.image.clone()).unwrap_or_default()));
        prop_assert_eq!(PullImageRequest::decode(&rewritten[..]).ok(), Some(expected));
        prop_assert_eq!(pull_image_name(&rewritten), Ok(image));
        if let Some(unknown) = &unknown {
            prop_assert!(rewritten.windows(unknown.len()).any(|w| w == &unknown[..]), "unknown field lost");
        }
    }
}

// === HTTP/2 frames and HPACK (the splice relay) ===

/// A header field as the relay writes it again: any bytes for name and value.
fn header_field() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (prop::collection::vec(any::<u8>(), 0..40), prop::collection::vec(any::<u8>(), 0..300))
}

proptest! {
    /// Blocks from a kubelet or containerd are remote input: decoding arbitrary bytes (one
    /// decoder across blocks, as on a connection) fails cleanly or yields fields.
    #[test]
    fn hpack_decoding_survives_arbitrary_blocks(blocks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..8)) {
        let mut decoder = pullgate::cri::hpack::Decoder::default();
        for block in blocks {
            let mut fields = Vec::new();
            if decoder.decode(&block, |name, value| fields.push((name.to_vec(), value.to_vec()))).is_err() {
                continue;
            }
            // What did decode is what the relay writes again: it must read back the same.
            let mut written = Vec::new();
            for (name, value) in &fields {
                pullgate::cri::frame::put_literal(&mut written, name, value);
            }
            let mut read_back = Vec::new();
            pullgate::cri::hpack::Decoder::default()
                .decode(&written, |name, value| read_back.push((name.to_vec(), value.to_vec())))
                .expect("the relay's own block decodes");
            prop_assert_eq!(read_back, fields);
        }
    }

    /// What the relay writes (literals that never index) reads back exactly, and leaves the
    /// reader's dynamic table as it was: a block indexing a dynamic entry still fails after it.
    #[test]
    fn header_blocks_written_again_read_back_unchanged(fields in prop::collection::vec(header_field(), 0..12)) {
        let mut block = Vec::new();
        for (name, value) in &fields {
            pullgate::cri::frame::put_literal(&mut block, name, value);
        }
        let mut decoder = pullgate::cri::hpack::Decoder::default();
        let mut decoded = Vec::new();
        decoder.decode(&block, |name, value| decoded.push((name.to_vec(), value.to_vec()))).expect("own block decodes");
        prop_assert_eq!(decoded, fields);
        let indexed_dynamic = decoder.decode(&[0x80 | 62], |_, _| {});
        prop_assert!(indexed_dynamic.is_err(), "the written block added a table entry");
    }

    /// Frames are cut whole out of any byte stream: never a panic, never a frame above the
    /// limit, and the bytes handed out are exactly the bytes taken.
    #[test]
    fn frames_are_cut_whole_from_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut buffer = bytes::BytesMut::from(&bytes[..]);
        let mut taken = 0;
        while let Ok(Some(frame)) = pullgate::cri::frame::next(&mut buffer, 1024) {
            prop_assert!(frame.payload().len() <= 1024);
            taken += frame.bytes.len();
            let _ = frame.fragment();
        }
        prop_assert_eq!(taken + buffer.len(), bytes.len());
    }
}
