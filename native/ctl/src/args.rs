//! The command line, checked before anything is sent (exit 2 on a usage error).

pub const USAGE: &str =
    "usage: ikeresume-resume [--socket PATH] [-c CONFIG] [--timeout SECONDS] PEER
  PEER         a [peers.<name>] of the agent's config
  --socket     the agent's socket (default $IKERESUME_AGENT_SOCKET or /run/ikeresume/agent.sock)
  -c CONFIG    the agent's config, for the cold start (default $IKERESUME_AGENT_CONFIG or
               /etc/ikeresume/agent.toml)
  --timeout    seconds to wait for the agent's answer (default 90, longer than any peer's
               attempt, which the config bounds to 60 s): then exit 3
exit: 0 resumed, 3 refused or timed out (run a full IKE), 4 unknown peer or config, 2 usage";

pub const DEFAULT_SOCKET: &str = "/run/ikeresume/agent.sock";
/// Longer than the longest attempt a peer may configure (60 s) plus its write and install:
/// a client that gave up while the agent still resumes would race its own fallback.
pub const DEFAULT_TIMEOUT: f64 = 90.0;

#[derive(Debug, PartialEq)]
pub struct Args {
    pub socket: String,
    pub config: Option<String>,
    pub timeout: f64,
    pub peer: String,
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Args),
    Help,
}

/// The agent's rule for a peer name (ikeshim/agent/wire.py PEER_NAME).
pub fn valid_peer(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

pub fn parse_args(argv: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Parsed, String> {
    let mut socket = env("IKERESUME_AGENT_SOCKET").unwrap_or_else(|| DEFAULT_SOCKET.to_string());
    let mut config = env("IKERESUME_AGENT_CONFIG");
    let mut timeout = DEFAULT_TIMEOUT;
    let mut peer = None;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--socket" => socket = value("--socket")?,
            "-c" | "--config" => config = Some(value("--config")?),
            "--timeout" => {
                let v = value("--timeout")?;
                timeout = v
                    .parse::<f64>()
                    .ok()
                    .filter(|t| t.is_finite() && *t > 0.0 && *t <= 3600.0)
                    .ok_or(format!("--timeout {v:?}: seconds in (0, 3600]"))?;
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            s if peer.is_none() => peer = Some(s.to_string()),
            s => return Err(format!("one PEER only (also got {s:?})")),
        }
    }
    let peer = peer.ok_or("PEER is required")?;
    if !valid_peer(&peer) {
        return Err(format!(
            "{peer:?} is not a peer name (letters, digits, '.', '_', '-')"
        ));
    }
    Ok(Parsed::Run(Args {
        socket,
        config,
        timeout,
        peer,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Parsed, String> {
        let argv: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        parse_args(&argv, |_| None)
    }

    #[test]
    fn defaults_and_options() {
        let Ok(Parsed::Run(a)) = parse(&["gw"]) else {
            panic!("gw must parse")
        };
        assert_eq!(
            (a.socket.as_str(), a.config, a.timeout),
            (DEFAULT_SOCKET, None, DEFAULT_TIMEOUT)
        );
        let Ok(Parsed::Run(a)) = parse(&["--socket", "/s", "-c", "/c", "--timeout", "2.5", "x.y"])
        else {
            panic!("options must parse")
        };
        assert_eq!(
            a,
            Args {
                socket: "/s".into(),
                config: Some("/c".into()),
                timeout: 2.5,
                peer: "x.y".into()
            }
        );
    }

    #[test]
    fn environment_gives_the_defaults() {
        let argv = vec!["gw".to_string()];
        let env = |k: &str| Some(format!("from-{k}"));
        let Ok(Parsed::Run(a)) = parse_args(&argv, env) else {
            panic!()
        };
        assert_eq!(a.socket, "from-IKERESUME_AGENT_SOCKET");
        assert_eq!(a.config.as_deref(), Some("from-IKERESUME_AGENT_CONFIG"));
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &[][..],
            &["--timeout"],
            &["--timeout", "0", "gw"],
            &["--timeout", "nan", "gw"],
            &["--bogus", "gw"],
            &["gw", "other"],
            &["-gw"],
            &["g w"],
            &["gw\nresume x"],
            &[".gw"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be a usage error");
        }
        assert_eq!(parse(&["-h"]), Ok(Parsed::Help));
        assert!(!valid_peer(&"a".repeat(65)) && valid_peer(&"a".repeat(64)));
    }
}
