//! Subject and message-id naming: `PREFIX.HOST.NAMESPACE.events` for the
//! records of one modeling namespace of one host, `….forensics` for its
//! forensics and verdict summaries, and de-duplication ids derived from the
//! record's sequence number, so that publishing the same records again
//! (a restart, a replay of the same archive) yields the same ids and the
//! server stores each record once.

/// Checks one subject token (a host, a namespace, a prefix): not empty, and
/// none of the characters NATS gives a meaning (`.`, `*`, `>`) or whitespace.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("empty name".into());
    }
    if token.len() > 64 {
        return Err(format!("{token:?} is longer than 64 bytes"));
    }
    match token
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
    {
        Some(c) => Err(format!("{token:?} contains {c:?}")),
        None => Ok(()),
    }
}

/// Checks a JetStream stream or consumer name (a token without `/` or `\`).
pub fn check_stream_name(name: &str) -> Result<(), String> {
    check_token(name)?;
    if name.contains(['/', '\\']) {
        return Err(format!("{name:?} contains a path separator"));
    }
    Ok(())
}

/// Makes a token out of arbitrary text (the system's host name may be a
/// dotted FQDN): characters outside `[A-Za-z0-9_-]` become `_`.
pub fn sanitize_token(text: &str) -> String {
    let s: String = text
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "unknown".into()
    } else {
        s
    }
}

/// The system host name as a subject token (`localhost` when it cannot be read).
pub fn system_host() -> String {
    match nix::unistd::gethostname() {
        Ok(name) => sanitize_token(&name.to_string_lossy()),
        Err(_) => "localhost".into(),
    }
}

/// The host token of a subject `PREFIX.HOST.…` (its second token).
pub fn host_of(subject: &str) -> Option<&str> {
    subject.split('.').nth(1).filter(|h| !h.is_empty())
}

/// The names of one publishing host and namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// First subject token.
    pub prefix: String,
    /// Host token.
    pub host: String,
    /// Namespace token (`local` for a file or standard input).
    pub namespace: String,
}

impl Names {
    /// Checked names.
    pub fn new(prefix: &str, host: &str, namespace: &str) -> Result<Names, String> {
        check_token(prefix).map_err(|e| format!("prefix: {e}"))?;
        check_token(host).map_err(|e| format!("host: {e}"))?;
        check_token(namespace).map_err(|e| format!("namespace: {e}"))?;
        Ok(Names {
            prefix: prefix.to_owned(),
            host: host.to_owned(),
            namespace: namespace.to_owned(),
        })
    }

    /// `PREFIX.HOST.NS.events`.
    pub fn events_subject(&self) -> String {
        format!("{}.{}.{}.events", self.prefix, self.host, self.namespace)
    }

    /// `PREFIX.HOST.NS.forensics`.
    pub fn forensics_subject(&self) -> String {
        format!("{}.{}.{}.forensics", self.prefix, self.host, self.namespace)
    }

    /// The `Nats-Msg-Id` of record `seq`: `HOST.NS.SEQ`.
    pub fn event_id(&self, seq: u64) -> String {
        format!("{}.{}.{seq}", self.host, self.namespace)
    }

    /// The id of the forensics message about record `seq`: `HOST.NS.f.SEQ`.
    pub fn forensics_id(&self, seq: u64) -> String {
        format!("{}.{}.f.{seq}", self.host, self.namespace)
    }

    /// The id of a summary after `events` events: `HOST.NS.s.EVENTS`.
    pub fn summary_id(&self, events: u64) -> String {
        format!("{}.{}.s.{events}", self.host, self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_subjects_and_stable_ids() {
        let n = Names::new("tsem", "web-1", "local").unwrap();
        assert_eq!(n.events_subject(), "tsem.web-1.local.events");
        assert_eq!(n.forensics_subject(), "tsem.web-1.local.forensics");
        assert_eq!(n.event_id(42), "web-1.local.42");
        assert_eq!(n.forensics_id(42), "web-1.local.f.42");
        assert_eq!(n.summary_id(7), "web-1.local.s.7");
        assert_eq!(host_of(&n.events_subject()), Some("web-1"));
        assert_eq!(host_of("tsem"), None);
    }

    #[test]
    fn tokens_refuse_wildcards_and_dots() {
        assert!(check_token("h1").is_ok());
        for bad in ["", "a.b", "a*", ">", "a b", "a\nb"] {
            assert!(check_token(bad).is_err(), "{bad:?}");
        }
        assert!(Names::new("tsem", "a.b", "local").is_err());
        assert_eq!(sanitize_token("web.example.com"), "web_example_com");
        assert_eq!(sanitize_token(""), "unknown");
        assert!(check_token(&system_host()).is_ok());
        assert!(check_stream_name("a/b").is_err());
    }
}
