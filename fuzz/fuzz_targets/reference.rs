//! Image references and policy scopes from arbitrary text: never a panic, and whatever parses
//! is shown in a form that parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullgate::policy::Scope;
use pullgate::reference::{Digest, ImageRef};

fuzz_target!(|text: &str| {
    if let Ok(image) = text.parse::<ImageRef>() {
        let shown = image.to_string();
        assert_eq!(shown.parse::<ImageRef>().as_ref(), Ok(&image), "{text:?} shown as {shown:?}");
        // Equality is by canonical registry; the host as written must survive too.
        assert_eq!(shown.parse::<ImageRef>().map(|i| i.to_string()), Ok(shown.clone()));
        if let Some(pinned) = image.pinned() {
            assert!(pinned.parse::<ImageRef>().is_ok(), "{text:?} pinned as {pinned:?}");
        }
    }
    if let Ok(image) = ImageRef::parse_for_pull(text) {
        assert!(image.tag().is_some() || image.digest().is_some());
        assert_eq!(ImageRef::parse_for_pull(&image.to_string()).as_ref(), Ok(&image));
    }
    if let Ok(digest) = text.parse::<Digest>() {
        assert_eq!(digest.to_string().parse::<Digest>().as_ref(), Ok(&digest));
    }
    if let Ok(scope) = text.parse::<Scope>() {
        let shown = scope.to_string();
        assert_eq!(shown.parse::<Scope>().as_ref(), Ok(&scope), "{text:?} shown as {shown:?}");
    }
});
