//! Native health probes: PostgreSQL and Redis asked directly, over a `direct-tcpip` channel of
//! the one SSH connection (a local port forward held by the control master), instead of a
//! `docker exec` of `pg_isready` or `redis-cli` in the container (≈0.12 s of start-up each).
//!
//! A check is up only when the far end answers in its own protocol: the local end of a
//! forward accepts a TCP connection even when nothing listens on the host, so a connect alone
//! proves nothing (which is why there is no `tcp` kind).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a native check speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Redis,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
        }
    }

    /// The port the server listens on inside its container unless told otherwise: the one a
    /// compose service's `ports` entry is looked up by.
    pub fn default_port(self) -> u16 {
        match self {
            Kind::Postgres => 5432,
            Kind::Redis => 6379,
        }
    }
}

/// Where a native check connects: an address as the host sees it, or a compose service whose
/// published port says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Address { host: String, port: u16 },
    Service(String),
}

/// `HOST:PORT` (`[::1]:5432` for IPv6) is an address; anything else names a service.
pub fn parse_endpoint(text: &str) -> Endpoint {
    if let Some((host, port)) = text.rsplit_once(':') {
        if let Ok(port) = port.parse::<u16>() {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if !host.is_empty() && port != 0 {
                return Endpoint::Address {
                    host: host.to_string(),
                    port,
                };
            }
        }
    }
    Endpoint::Service(text.to_string())
}

/// The host address a compose service publishes `kind`'s port on, from
/// `compose config --format json`: the `ports` entry whose container port is the kind's
/// default, else the service's only published TCP port. A wildcard bind is reached on
/// loopback.
pub fn published_address(
    config: &[u8],
    service: &str,
    kind: Kind,
) -> Result<(String, u16), String> {
    let doc: serde_json::Value = serde_json::from_slice(config)
        .map_err(|e| format!("cannot read `compose config` output: {e}"))?;
    let Some(def) = doc["services"].get(service) else {
        return Err(format!("the compose project has no service `{service}`"));
    };
    let published: Vec<(u64, String, u16)> = def["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["protocol"].as_str().unwrap_or("tcp") == "tcp")
        .filter_map(|p| {
            let target = p["target"].as_u64()?;
            let port = match &p["published"] {
                serde_json::Value::String(s) => s.parse::<u16>().ok()?,
                serde_json::Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
                _ => return None,
            };
            let host_ip = p["host_ip"].as_str().unwrap_or_default();
            Some((target, loopback_for(host_ip), port))
        })
        .collect();
    let wanted = u64::from(kind.default_port());
    let chosen = published
        .iter()
        .find(|(target, _, _)| *target == wanted)
        .or(match published.as_slice() {
            [only] => Some(only),
            _ => None,
        });
    if let Some((_, host, port)) = chosen {
        return Ok((host.clone(), *port));
    }
    let why = if def["network_mode"].as_str() == Some("host") {
        "uses the host's network and publishes no port, so its port cannot be told".to_string()
    } else if published.is_empty() {
        "publishes no port on the host".to_string()
    } else {
        format!("publishes no port for {wanted} and more than one other")
    };
    Err(format!("service `{service}` {why}"))
}

fn loopback_for(host_ip: &str) -> String {
    match host_ip {
        "" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" => "::1".to_string(),
        ip => ip.to_string(),
    }
}

/// Who the PostgreSQL startup message says is connecting (a real role and database keep
/// the server's log quiet where loopback is trusted).
#[derive(Debug, Clone)]
pub struct PgIdentity {
    pub user: String,
    pub database: String,
}

/// The protocol 3.0 startup message: length, version 196608, then `key\0value\0` pairs and a
/// final `\0`.
pub fn startup_message(who: &PgIdentity) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (key, value) in [
        ("user", who.user.as_str()),
        ("database", who.database.as_str()),
        ("application_name", "ctops health"),
    ] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend(body);
    message
}

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Judged {
    /// Not enough bytes yet.
    More,
    Up(String),
    Down(String),
}

/// PostgreSQL's answer to a startup message, judged as `pg_isready` does: an authentication
/// request, or any error but 57P03 ("the database system is starting up", or shutting down),
/// means the server accepts connections.
pub fn judge_postgres(reply: &[u8]) -> Judged {
    let Some(&tag) = reply.first() else {
        return Judged::More;
    };
    if reply.len() < 5 {
        return Judged::More;
    }
    let len = u32::from_be_bytes([reply[1], reply[2], reply[3], reply[4]]) as usize;
    if !(4..=64 * 1024).contains(&len) {
        return Judged::Down(format!("not a PostgreSQL answer (message {tag:#04x})"));
    }
    if reply.len() < 1 + len {
        return Judged::More;
    }
    match tag {
        b'R' => Judged::Up("accepting connections".to_string()),
        b'E' => {
            let fields = error_fields(&reply[5..1 + len]);
            let code = fields.get(&b'C').cloned().unwrap_or_default();
            let message = fields.get(&b'M').cloned().unwrap_or_default();
            if code == "57P03" {
                Judged::Down(format!("not accepting connections: {message} (57P03)"))
            } else {
                Judged::Up(format!("accepting connections (said {code}: {message})"))
            }
        }
        other => Judged::Down(format!("not a PostgreSQL answer (message {other:#04x})")),
    }
}

/// An ErrorResponse body: `type byte, text\0` fields up to a final `\0`.
fn error_fields(body: &[u8]) -> BTreeMap<u8, String> {
    let mut fields = BTreeMap::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        fields.insert(kind, String::from_utf8_lossy(&tail[..end]).into_owned());
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    fields
}

/// `PING` as a RESP array (what redis-cli sends).
pub const REDIS_PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// Redis's answer to `PING`: any RESP reply means it answers, except the errors that say it
/// cannot serve yet (loading its data set, busy in a script, its master down).
pub fn judge_redis(reply: &[u8]) -> Judged {
    let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return if reply.len() > 4096 {
            Judged::Down("not a RESP answer".to_string())
        } else {
            Judged::More
        };
    };
    let line = String::from_utf8_lossy(&reply[..end]).into_owned();
    match line.as_bytes().first() {
        Some(b'+') => Judged::Up(line[1..].to_string()),
        Some(b'-') => {
            let text = &line[1..];
            let not_ready = ["LOADING", "BUSY", "MASTERDOWN"];
            if not_ready.iter().any(|p| text.starts_with(p)) {
                Judged::Down(text.to_string())
            } else {
                Judged::Up(format!("answers: {text}"))
            }
        }
        Some(
            b':' | b'$' | b'*' | b'_' | b',' | b'#' | b'!' | b'=' | b'(' | b'%' | b'~' | b'>'
            | b'|',
        ) => Judged::Up(format!("answers: {line}")),
        _ => Judged::Down("not a RESP answer".to_string()),
    }
}

/// Connects to `via` (the local end of the forward to `shown`), sends the kind's request and
/// reads until the answer can be judged, the far end closes, or `timeout` passes.
pub async fn probe(
    kind: Kind,
    via: SocketAddr,
    shown: &str,
    pg: &PgIdentity,
    timeout: Duration,
) -> Result<String, String> {
    let work = async {
        let mut stream = TcpStream::connect(via)
            .await
            .map_err(|e| format!("cannot reach the forward to {shown}: {e}"))?;
        let request = match kind {
            Kind::Postgres => startup_message(pg),
            Kind::Redis => REDIS_PING.to_vec(),
        };
        // A closed port on the host shows up here or as an EOF below: the forward's local end
        // accepted, then the master closed it when the host refused the channel.
        let _ = stream.write_all(&request).await;
        let mut reply = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let judged = match kind {
                Kind::Postgres => judge_postgres(&reply),
                Kind::Redis => judge_redis(&reply),
            };
            match judged {
                Judged::Up(detail) => {
                    if kind == Kind::Postgres {
                        // Terminate: a trusted login ends without a log line about a lost client.
                        let _ = stream.write_all(b"X\0\0\0\x04").await;
                    }
                    return Ok(detail);
                }
                Judged::Down(detail) => return Err(detail),
                Judged::More => {}
            }
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return Err(format!(
                    "no answer from {shown}: the connection closed (nothing listening there?)"
                ));
            }
            reply.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {shown} within {} (timeouts.check)",
                humantime::format_duration(timeout)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_response(code: &str, message: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in [(b'S', "FATAL"), (b'C', code), (b'M', message)] {
            body.push(k);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = vec![b'E'];
        msg.extend(((body.len() + 4) as u32).to_be_bytes());
        msg.extend(body);
        msg
    }

    #[test]
    fn the_startup_message_is_protocol_3_with_its_length() {
        let who = PgIdentity {
            user: "trader".into(),
            database: "trader_psy".into(),
        };
        let msg = startup_message(&who);
        assert_eq!(
            u32::from_be_bytes(msg[0..4].try_into().unwrap()) as usize,
            msg.len()
        );
        assert_eq!(&msg[4..8], &[0, 3, 0, 0]);
        assert!(msg.ends_with(b"ctops health\0\0"));
        let text = String::from_utf8_lossy(&msg[8..]);
        assert!(
            text.starts_with("user\0trader\0database\0trader_psy\0"),
            "{text:?}"
        );
    }

    #[test]
    fn postgres_is_up_on_an_auth_request_or_any_error_but_57p03() {
        let sasl = b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0";
        assert_eq!(
            judge_postgres(sasl),
            Judged::Up("accepting connections".into())
        );
        assert_eq!(judge_postgres(&sasl[..3]), Judged::More);
        let starting = error_response("57P03", "the database system is starting up");
        assert!(matches!(judge_postgres(&starting), Judged::Down(d) if d.contains("starting up")));
        assert_eq!(
            judge_postgres(&starting[..starting.len() - 1]),
            Judged::More
        );
        let no_role = error_response("28000", "role \"x\" does not exist");
        assert!(matches!(judge_postgres(&no_role), Judged::Up(d) if d.contains("28000")));
        assert!(matches!(
            judge_postgres(b"HTTP/1.1 400 Bad"),
            Judged::Down(_)
        ));
    }

    #[test]
    fn redis_is_up_on_a_resp_reply_but_not_while_loading() {
        assert_eq!(judge_redis(b"+PONG\r\n"), Judged::Up("PONG".into()));
        assert_eq!(judge_redis(b"+PON"), Judged::More);
        assert!(matches!(
            judge_redis(b"-NOAUTH Authentication required.\r\n"),
            Judged::Up(_)
        ));
        assert!(matches!(
            judge_redis(b"-LOADING Redis is loading the dataset in memory\r\n"),
            Judged::Down(_)
        ));
        assert!(matches!(
            judge_redis(b"SSH-2.0-OpenSSH\r\n"),
            Judged::Down(_)
        ));
    }

    #[test]
    fn an_endpoint_is_an_address_or_a_service() {
        assert_eq!(
            parse_endpoint("127.0.0.1:15432"),
            Endpoint::Address {
                host: "127.0.0.1".into(),
                port: 15432
            }
        );
        assert_eq!(
            parse_endpoint("[::1]:6379"),
            Endpoint::Address {
                host: "::1".into(),
                port: 6379
            }
        );
        assert_eq!(parse_endpoint("redis"), Endpoint::Service("redis".into()));
    }

    #[test]
    fn a_service_resolves_to_its_published_port_or_is_refused() {
        let config = br#"{"services": {
            "postgres": {"ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 5432, "published": "55432", "protocol": "tcp"}]},
            "redis": {"ports": [{"target": 6380, "published": "16380"}]},
            "api": {"ports": [{"target": 80, "published": "8000"}, {"target": 81, "published": "8001"}]},
            "hostnet": {"network_mode": "host"}
        }}"#;
        assert_eq!(
            published_address(config, "postgres", Kind::Postgres).unwrap(),
            ("127.0.0.1".into(), 55432)
        );
        // The only published port, on a wildcard bind: reached on loopback.
        assert_eq!(
            published_address(config, "redis", Kind::Redis).unwrap(),
            ("127.0.0.1".into(), 16380)
        );
        let host = published_address(config, "hostnet", Kind::Redis).unwrap_err();
        assert!(host.contains("host's network"), "{host}");
        let many = published_address(config, "api", Kind::Redis).unwrap_err();
        assert!(many.contains("no port for 6379"), "{many}");
        let missing = published_address(config, "nope", Kind::Redis).unwrap_err();
        assert!(missing.contains("no service `nope`"), "{missing}");
    }
}
