//! `ikeresume-resume PEER`: ask the resident `ikeresume agent` to resume PEER now.
//!
//! Why a native binary: the request is one line over a UNIX socket and the agent does the
//! work with its store open and its core loaded, so the command's wall time is the
//! exchange and the install -- not Python's start-up, which costs more than the full IKE
//! this replaces.  Exit codes are `ikeresume resume`'s: 0 resumed, 3 refused or timed out
//! (run a full IKE: `ikeresume-resume gw || swanctl --initiate ...`), 4 unknown peer or bad
//! config, 2 usage.  When no agent listens (cold start) it execs `ikeresume agent resume`
//! with the same peer, which resumes in that process and exits the same way.

mod args;
mod reply;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use args::{parse_args, Args, Parsed};

const EXIT_FALLBACK: u8 = 3;
const EXIT_USAGE: u8 = 2;
/// A reply is one JSON line of a few hundred bytes; more is not an agent talking.
const MAX_REPLY: u64 = 64 * 1024;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv, |k| std::env::var(k).ok()) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("ikeresume-resume: {msg}\n{}", args::USAGE);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match UnixStream::connect(&args.socket) {
        Ok(stream) => ExitCode::from(ask(stream, &args)),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            cold_start(&args)
        }
        Err(e) => {
            eprintln!("ikeresume-resume: {}: {e}", args.socket);
            ExitCode::from(EXIT_FALLBACK)
        }
    }
}

/// Send the request, relay the reply; any failure after connecting is exit 3.
fn ask(mut stream: UnixStream, args: &Args) -> u8 {
    let timeout = Some(Duration::from_secs_f64(args.timeout));
    let mut buf = Vec::with_capacity(512);
    let io = stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .and_then(|()| stream.write_all(format!("resume {}\n", args.peer).as_bytes()))
        .and_then(|()| (&mut stream).take(MAX_REPLY).read_to_end(&mut buf));
    if let Err(e) = io {
        let what = match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => "timed out".to_string(),
            _ => e.to_string(),
        };
        eprintln!("{{\"outcome\":\"timeout\",\"detail\":\"agent: {what}\"}}");
        return EXIT_FALLBACK;
    }
    match reply::parse(&buf) {
        Some((code, body)) => {
            if code == 0 {
                println!("{body}");
            } else {
                eprintln!("{body}");
            }
            code
        }
        None => {
            eprintln!("{{\"outcome\":\"timeout\",\"detail\":\"agent gave no usable reply\"}}");
            EXIT_FALLBACK
        }
    }
}

/// No agent: run the Python one-shot in this process's place (same peer, same config).
fn cold_start(args: &Args) -> ExitCode {
    let cli = python_cli();
    let mut cmd = Command::new(&cli);
    cmd.arg("agent");
    if let Some(c) = &args.config {
        cmd.args(["-c", c]);
    }
    cmd.args(["resume", &args.peer, "--timeout", &args.timeout.to_string()]);
    let err = cmd.exec(); // returns only on failure
    eprintln!(
        "ikeresume-resume: no agent, and {} failed: {err}",
        cli.display()
    );
    ExitCode::from(EXIT_FALLBACK)
}

/// `$IKERESUME_CLI`, else the `ikeresume` installed beside this binary, else `$PATH`'s.
fn python_cli() -> PathBuf {
    if let Some(p) = std::env::var_os("IKERESUME_CLI") {
        return PathBuf::from(p);
    }
    if let Ok(me) = std::env::current_exe() {
        if let Some(sibling) = me.parent().map(|d| d.join("ikeresume")) {
            if sibling.is_file() {
                return sibling;
            }
        }
    }
    PathBuf::from("ikeresume")
}
