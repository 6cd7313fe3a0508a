//! Image references as wasmcell writes them into archives: `[registry/]path[:tag]`.
//!
//! Names are kept exactly as given (no `docker.io/library/` expansion): containerd stores the
//! `io.containerd.image.name` annotation verbatim, and so `ctr run` must be given the same text.

/// A parsed `name:tag` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Everything before the tag, e.g. `localhost/wasmcell/demo-app`.
    pub repository: String,
    /// The tag, `latest` when none was given.
    pub tag: String,
}

/// Why a reference was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Empty input.
    #[error("image reference is empty")]
    Empty,
    /// A digest reference cannot name a newly written image.
    #[error("image reference {reference:?} names a digest; give a name with an optional :tag")]
    Digest {
        /// The input.
        reference: String,
    },
    /// A path component breaks the distribution grammar.
    #[error(
        "image reference {reference:?}: path component {component:?} must be lowercase letters, digits and single separators (. _ __ -)"
    )]
    Component {
        /// The input.
        reference: String,
        /// The offending component.
        component: String,
    },
    /// The tag breaks the grammar.
    #[error(
        "image reference {reference:?}: tag {tag:?} must be 1-128 of [A-Za-z0-9_.-], not starting with . or -"
    )]
    Tag {
        /// The input.
        reference: String,
        /// The offending tag.
        tag: String,
    },
}

impl Reference {
    /// Parses `s`, defaulting the tag to `latest`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.contains('@') {
            return Err(ReferenceError::Digest {
                reference: s.to_owned(),
            });
        }
        // A colon after the last slash starts the tag; one before it is a registry port.
        let last_slash = s.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match s[last_slash..].rfind(':') {
            Some(i) => (&s[..last_slash + i], &s[last_slash + i + 1..]),
            None => (s, "latest"),
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !tag_ok {
            return Err(ReferenceError::Tag {
                reference: s.to_owned(),
                tag: tag.to_owned(),
            });
        }
        let mut components = repository.split('/').peekable();
        let mut first = true;
        while let Some(component) = components.next() {
            // The first component may be a registry host (dots, port, uppercase allowed).
            let is_registry = first
                && components.peek().is_some()
                && (component.contains(['.', ':']) || component == "localhost");
            first = false;
            let ok = if is_registry {
                valid_registry(component)
            } else {
                valid_path_component(component)
            };
            if !ok {
                return Err(ReferenceError::Component {
                    reference: s.to_owned(),
                    component: component.to_owned(),
                });
            }
        }
        Ok(Reference {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

fn valid_registry(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
}

fn valid_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators are `.`, `_`, `__` or runs of `-`, always between alphanumerics.
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        let sep_len = match b {
            b'.' => 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => bytes[i..].iter().take_while(|&&x| x == b'-').count(),
            _ => return false,
        };
        i += sep_len;
        if !bytes.get(i).copied().is_some_and(alnum) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_port_and_tag() {
        let r = Reference::parse("127.0.0.1:5000/wasmcell/demo-app:v1.2");
        assert_eq!(
            r,
            Ok(Reference {
                repository: "127.0.0.1:5000/wasmcell/demo-app".into(),
                tag: "v1.2".into()
            })
        );
        let r = Reference::parse("localhost/wasmcell/demo-app").map(|r| r.to_string());
        assert_eq!(r, Ok("localhost/wasmcell/demo-app:latest".to_owned()));
    }

    #[test]
    fn rejects_bad_references() {
        assert_eq!(Reference::parse(""), Err(ReferenceError::Empty));
        assert!(matches!(
            Reference::parse("Demo/App"),
            Err(ReferenceError::Component { .. })
        ));
        assert!(matches!(
            Reference::parse("a/../b"),
            Err(ReferenceError::Component { .. })
        ));
        assert!(matches!(
            Reference::parse("demo:-x"),
            Err(ReferenceError::Tag { .. })
        ));
        assert!(matches!(
            Reference::parse("demo@sha256:00"),
            Err(ReferenceError::Digest { .. })
        ));
    }
}
