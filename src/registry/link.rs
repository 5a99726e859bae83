//! The `Link` header the referrers API pages with (OCI distribution spec 1.1): `<url>;
//! rel="next"` names the next page. Only a page of the same list is followed: the same
//! scheme, host, port and path as the page that named it, only the query may differ. A
//! registry that names anything else is not followed there.

use reqwest::Url;

/// The next page `values` (every `Link` header of a response) name, resolved against
/// `current`; `Ok(None)` when there is none, `Err` (why it is not followed) when it names
/// something other than another page of the same list.
pub fn next_page<'v>(current: &Url, values: impl IntoIterator<Item = &'v str>) -> Result<Option<Url>, String> {
    let Some(target) = values.into_iter().flat_map(|value| value.split(',')).find_map(next_target) else {
        return Ok(None);
    };
    let shown: String = target.chars().take(100).collect();
    let next = current.join(target).map_err(|_| format!("the next page's link {shown:?} is not a URL"))?;
    if next.origin() != current.origin() || next.path() != current.path() {
        return Err(format!("the next page's link {shown:?} leaves the referrers list of this registry"));
    }
    Ok(Some(next))
}

/// The target of one link-value if its `rel` is `next`.
fn next_target(link: &str) -> Option<&str> {
    let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
    let is_next = params.split(';').filter_map(|param| param.split_once('=')).any(|(name, value)| {
        name.trim().eq_ignore_ascii_case("rel")
            && value.trim().trim_matches('"').split_ascii_whitespace().any(|rel| rel.eq_ignore_ascii_case("next"))
    });
    is_next.then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "https://registry.example/v2/team/app/referrers/sha256:aa?ns=docker.io";

    fn next(values: &[&str]) -> Result<Option<String>, String> {
        next_page(&Url::parse(PAGE).unwrap(), values.iter().copied()).map(|url| url.map(String::from))
    }

    #[test]
    fn a_next_link_on_the_same_list_is_followed() {
        let expected = "https://registry.example/v2/team/app/referrers/sha256:aa?n=10&last=x";
        assert_eq!(next(&["</v2/team/app/referrers/sha256:aa?n=10&last=x>; rel=\"next\""]), Ok(Some(expected.into())));
        assert_eq!(next(&[&format!("<{expected}>;rel=next")]), Ok(Some(expected.into())));
        let among =
            "<https://elsewhere.example/x>; rel=\"prev\", </v2/team/app/referrers/sha256:aa?n=10&last=x>; rel=\"next\"";
        assert_eq!(next(&[among]), Ok(Some(expected.into())));
        assert_eq!(
            next(&[
                "<https://elsewhere.example/x>; rel=\"prev\"",
                "</v2/team/app/referrers/sha256:aa?n=10&last=x>; REL=\"Next\""
            ]),
            Ok(Some(expected.into()))
        );
    }

    #[test]
    fn no_next_link_is_the_last_page() {
        assert_eq!(next(&[]), Ok(None));
        assert_eq!(next(&["</v2/team/app/referrers/sha256:aa?n=10>; rel=\"prev\""]), Ok(None));
        for junk in ["", "garbage", "<unterminated; rel=next", "rel=\"next\""] {
            assert_eq!(next(&[junk]), Ok(None), "{junk}");
        }
    }

    #[test]
    fn a_link_leaving_the_list_is_not_followed() {
        for link in [
            "<https://elsewhere.example/v2/team/app/referrers/sha256:aa?n=1>; rel=\"next\"",
            "<http://registry.example/v2/team/app/referrers/sha256:aa?n=1>; rel=\"next\"",
            "<https://registry.example:444/v2/team/app/referrers/sha256:aa?n=1>; rel=\"next\"",
            "</v2/team/other/referrers/sha256:aa>; rel=\"next\"",
            "</v2/team/app/manifests/latest>; rel=\"next\"",
            "<../../manifests/latest>; rel=\"next\"",
            "<//elsewhere.example/v2/team/app/referrers/sha256:aa>; rel=\"next\"",
        ] {
            let refused = next(&[link]).unwrap_err();
            assert!(refused.contains("leaves the referrers list"), "{link}: {refused}");
        }
    }
}
