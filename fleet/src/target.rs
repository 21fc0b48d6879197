//! Where records go and come from: `nats://` and `mqtt://` addresses with
//! their options as query parameters (`nats://127.0.0.1:4222?max_age=7d`).
//!
//! Options travel in the address so that one `--publish URL` says
//! everything about one destination, and several destinations with
//! different settings can be given side by side. Unknown options are
//! refused: a misspelt retention setting must not pass silently.

use std::time::Duration;

use crate::FleetError;

/// Default NATS port.
pub const NATS_PORT: u16 = 4222;
/// Default MQTT port.
pub const MQTT_PORT: u16 = 1883;

/// How the disk buffer in front of a destination behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferOptions {
    /// Most bytes waiting in the buffer; records beyond are dropped and counted.
    pub max_bytes: u64,
    /// How long the end of a run waits for the buffer to drain.
    pub drain: Duration,
    /// Most records in one batch sent to the server.
    pub batch: usize,
}

impl Default for BufferOptions {
    fn default() -> Self {
        BufferOptions {
            max_bytes: 1 << 30,
            drain: Duration::from_secs(10),
            batch: 512,
        }
    }
}

/// A NATS JetStream destination or source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsTarget {
    /// `host:port` of the server.
    pub server: String,
    /// Stream name (publishing: created if missing; reading: found by subject when `None`).
    pub stream: Option<String>,
    /// First subject token (`tsem` in `tsem.HOST.NS.events`).
    pub prefix: String,
    /// Retention: drop messages older than this (`None`: keep).
    pub max_age: Option<Duration>,
    /// Retention: keep at most this many bytes (`None`: no limit).
    pub max_bytes: Option<i64>,
    /// Window in which the server drops a message whose `Nats-Msg-Id` it has already stored.
    pub duplicate_window: Duration,
    /// How long to wait for the server's answer to a publish or request.
    pub timeout: Duration,
    /// Reading: how long a delivered record may stay unacknowledged before redelivery.
    pub ack_wait: Duration,
}

/// An MQTT broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttTarget {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client identifier (default: derived from host, namespace and process).
    pub client_id: Option<String>,
    /// How long to wait for the broker's PUBACKs of a batch.
    pub timeout: Duration,
}

/// What kind of server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// NATS JetStream.
    Nats(NatsTarget),
    /// MQTT (QoS 1).
    Mqtt(MqttTarget),
}

/// A parsed destination address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The server and its options.
    pub server: Server,
    /// The disk buffer's options.
    pub buffer: BufferOptions,
    /// The address without its options, for messages.
    pub display: String,
}

impl Target {
    /// Parses `nats://HOST[:PORT][?OPTIONS]` or `mqtt://HOST[:PORT][?OPTIONS]`.
    ///
    /// NATS options: `stream`, `prefix`, `max_age`, `max_bytes`,
    /// `duplicate_window`, `timeout`, `ack_wait`; MQTT options: `client_id`,
    /// `timeout`; both: `buffer_max`, `drain`, `batch`.
    pub fn parse(url: &str) -> Result<Target, FleetError> {
        let bad = |what: String| FleetError::Address {
            url: url.to_owned(),
            what,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected nats://HOST:PORT or mqtt://HOST:PORT".into()))?;
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, q),
            None => (rest, ""),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority.contains('@') {
            return Err(bad("credentials in the address are not supported".into()));
        }
        if authority.contains('/') {
            return Err(bad("an address has no path".into()));
        }
        let default_port = match scheme {
            "nats" => NATS_PORT,
            "mqtt" => MQTT_PORT,
            other => return Err(bad(format!("unknown scheme {other:?} (nats or mqtt)"))),
        };
        let (host, port) = split_host_port(authority, default_port).map_err(bad)?;
        let mut buffer = BufferOptions::default();
        let mut batch = None;
        let mut nats = NatsTarget {
            server: join_host_port(&host, port),
            stream: None,
            prefix: "tsem".into(),
            max_age: None,
            max_bytes: None,
            duplicate_window: Duration::from_secs(120),
            timeout: Duration::from_secs(5),
            ack_wait: Duration::from_secs(60),
        };
        let mut mqtt = MqttTarget {
            host: host.clone(),
            port,
            client_id: None,
            timeout: Duration::from_secs(10),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("option {pair:?} has no value (KEY=VALUE)")))?;
            let value_err = |e: String| bad(format!("{key}: {e}"));
            match (scheme, key) {
                (_, "buffer_max") => buffer.max_bytes = parse_size(value).map_err(value_err)?,
                (_, "drain") => buffer.drain = parse_duration(value).map_err(value_err)?,
                (_, "batch") => {
                    batch = value
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| (1..=65_535).contains(&n))
                        .map(Some)
                        .ok_or_else(|| value_err("a count from 1 to 65535".into()))?
                }
                ("nats", "stream") => {
                    crate::subject::check_stream_name(value).map_err(value_err)?;
                    nats.stream = Some(value.to_owned());
                }
                ("nats", "prefix") => {
                    crate::subject::check_token(value).map_err(value_err)?;
                    nats.prefix = value.to_owned();
                }
                ("nats", "max_age") => {
                    nats.max_age = Some(parse_duration(value).map_err(value_err)?)
                }
                ("nats", "max_bytes") => {
                    let n = parse_size(value).map_err(value_err)?;
                    nats.max_bytes =
                        Some(i64::try_from(n).map_err(|_| value_err("size too large".into()))?);
                }
                ("nats", "duplicate_window") => {
                    nats.duplicate_window = parse_duration(value).map_err(value_err)?
                }
                ("nats", "timeout") => nats.timeout = parse_duration(value).map_err(value_err)?,
                ("mqtt", "timeout") => mqtt.timeout = parse_duration(value).map_err(value_err)?,
                ("nats", "ack_wait") => nats.ack_wait = parse_duration(value).map_err(value_err)?,
                ("mqtt", "client_id") => mqtt.client_id = Some(value.to_owned()),
                _ => return Err(bad(format!("unknown option {key:?} for {scheme}://"))),
            }
        }
        // A broker that does not set TCP_NODELAY holds its last PUBACK of a
        // batch back until our delayed ACK (40 ms on Linux): larger MQTT
        // batches make that pause rare (measured: 11 000 -> 46 000 messages/s).
        buffer.batch = batch.unwrap_or(if scheme == "mqtt" { 4096 } else { 512 });
        if let Some(age) = nats.max_age {
            // The server refuses a duplicate window longer than the retention.
            if nats.duplicate_window > age {
                nats.duplicate_window = age;
            }
        }
        for (name, d) in [
            ("timeout", nats.timeout),
            ("timeout", mqtt.timeout),
            ("duplicate_window", nats.duplicate_window),
            ("ack_wait", nats.ack_wait),
        ] {
            if d.is_zero() {
                return Err(bad(format!("{name} must be more than zero")));
            }
        }
        let display = format!("{scheme}://{}", join_host_port(&host, port));
        let server = match scheme {
            "nats" => Server::Nats(nats),
            _ => Server::Mqtt(mqtt),
        };
        Ok(Target {
            server,
            buffer,
            display,
        })
    }

    /// A short name for the destination, usable as a directory name.
    pub fn key(&self) -> String {
        let raw = match &self.server {
            Server::Nats(n) => format!("nats-{}", n.server),
            Server::Mqtt(m) => format!("mqtt-{}", join_host_port(&m.host, m.port)),
        };
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed [ in the host".to_owned())?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("unexpected {after:?} after the host")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("bad port {p:?}"))?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

/// Parses `500ms`, `30s`, `2m`, `1h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.');
    let (number, unit) = match split {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (e.g. 500ms, 30s, 2m, 1h, 7d)"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("unknown unit in {text:?} (ms, s, m, h or d)")),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| format!("not a duration: {text:?}"))
}

/// Parses a size with an optional binary suffix: `4096`, `64K`, `256M`, `1G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KIB" => 10,
        "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        "T" | "TIB" => 40,
        _ => return Err(format!("unknown size unit in {text:?} (K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size too large: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_addresses_take_defaults_and_options() {
        let t = Target::parse("nats://127.0.0.1").unwrap();
        assert_eq!(t.display, "nats://127.0.0.1:4222");
        let Server::Nats(n) = &t.server else {
            panic!("not nats")
        };
        assert_eq!(n.server, "127.0.0.1:4222");
        assert_eq!(n.prefix, "tsem");
        assert_eq!(n.stream, None);
        assert_eq!(n.duplicate_window, Duration::from_secs(120));
        let t = Target::parse(
            "nats://localhost:5000?stream=FLEET&prefix=t1&max_age=1m&max_bytes=1G&duplicate_window=5m&buffer_max=64K&drain=500ms&batch=10",
        )
        .unwrap();
        let Server::Nats(n) = &t.server else {
            panic!("not nats")
        };
        assert_eq!(n.server, "localhost:5000");
        assert_eq!(n.stream.as_deref(), Some("FLEET"));
        assert_eq!(n.prefix, "t1");
        assert_eq!(n.max_age, Some(Duration::from_secs(60)));
        assert_eq!(n.max_bytes, Some(1 << 30));
        // Clamped to the retention, which the server requires.
        assert_eq!(n.duplicate_window, Duration::from_secs(60));
        assert_eq!(t.buffer.max_bytes, 64 << 10);
        assert_eq!(t.buffer.drain, Duration::from_millis(500));
        assert_eq!(t.buffer.batch, 10);
        assert_eq!(t.key(), "nats-localhost_5000");
    }

    #[test]
    fn mqtt_and_ipv6_addresses() {
        let t = Target::parse("mqtt://[::1]?client_id=me").unwrap();
        assert_eq!(t.display, "mqtt://[::1]:1883");
        let Server::Mqtt(m) = &t.server else {
            panic!("not mqtt")
        };
        assert_eq!((m.host.as_str(), m.port), ("::1", 1883));
        assert_eq!(m.client_id.as_deref(), Some("me"));
        assert_eq!(t.buffer.batch, 4096);
    }

    #[test]
    fn bad_addresses_say_why() {
        for (url, why) in [
            ("127.0.0.1:4222", "expected nats://"),
            ("http://x", "unknown scheme"),
            ("nats://x:0", "bad port"),
            ("nats://x:99999", "bad port"),
            ("nats://", "no host"),
            ("nats://u:p@x", "credentials"),
            ("nats://x?max_agee=1h", "unknown option"),
            ("mqtt://x?stream=A", "unknown option"),
            ("nats://x?prefix=a.b", "prefix"),
            ("nats://x?stream=a.b", "stream"),
            ("nats://x?batch=0", "batch"),
            ("nats://x?drain", "no value"),
            ("nats://x?timeout=0s", "more than zero"),
        ] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert!(parse_size("99999999999999G").is_err());
    }
}
