//! A registry that lies, for the tests of what a client must refuse: it serves one manifest
//! (`lie/app:v1`, a config and a layer), then answers the config's blob with the chosen
//! [`Lie`] (or tells it about the manifest itself). Plain HTTP/1.1 on loopback, one thread per connection, each closed after one
//! answer.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// What the registry does when the config blob is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// Other bytes of the same length.
    WrongDigest,
    /// Fewer bytes than the descriptor says, with a matching `Content-Length`.
    ShortBody,
    /// `Content-Length: 10 GiB`, then a few bytes and the end.
    HugeContentLength,
    /// The manifest itself says the config is 10 GiB.
    HugeDescriptor,
    /// A redirect to itself, forever.
    RedirectLoop,
    /// Headers, then nothing, for a minute.
    Stall,
    /// The manifest's own `Content-Length` says 10 GiB.
    HugeManifestLength,
    /// A manifest without a length that never ends (until 1 GiB has been sent).
    EndlessManifest,
}

/// The running registry; it stops with the process (its thread never joins).
#[derive(Debug)]
pub struct LyingRegistry {
    /// `127.0.0.1:PORT`.
    pub address: String,
}

const CONFIG: &[u8] =
    br#"{"architecture":"wasm","os":"wasip2","rootfs":{"type":"layers","diff_ids":[]}}"#;
const LAYER: &[u8] = b"\0asm\x01\0\0\0";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl LyingRegistry {
    /// Starts a registry that tells `lie`.
    pub fn start(lie: Lie) -> std::io::Result<LyingRegistry> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = answer(stream, lie);
                });
            }
        });
        Ok(LyingRegistry { address })
    }
}

fn manifest(lie: Lie) -> Vec<u8> {
    let config_size: u64 = if lie == Lie::HugeDescriptor {
        10 << 30
    } else {
        CONFIG.len() as u64
    };
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(CONFIG), "size": config_size},
        "layers": [{"mediaType": "application/wasm", "digest": digest(LAYER), "size": LAYER.len()}]
    }))
    .unwrap_or_default()
}

fn answer(stream: TcpStream, lie: Lie) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let mut out = stream;
    let send = |out: &mut TcpStream, status: &str, headers: &str, body: &[u8]| {
        write!(
            out,
            "HTTP/1.1 {status}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )?;
        out.write_all(body)
    };
    if path == "/v2/" {
        return send(&mut out, "200 OK", "", b"{}");
    }
    if path.starts_with("/v2/lie/app/manifests/") {
        let media_type = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
        if lie == Lie::HugeManifestLength {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nConnection: close\r\n{media_type}Content-Length: {}\r\n\r\n{{",
                10u64 << 30
            )?;
            return out.flush();
        }
        if lie == Lie::EndlessManifest {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nConnection: close\r\n{media_type}\r\n{{"
            )?;
            let spaces = vec![b' '; 64 << 10];
            for _ in 0..(1 << 30) / spaces.len() {
                out.write_all(&spaces)?;
            }
            return Ok(());
        }
        let body = manifest(lie);
        let headers = format!(
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {}\r\n",
            digest(&body)
        );
        return send(&mut out, "200 OK", &headers, &body);
    }
    if path == format!("/v2/lie/app/blobs/{}", digest(LAYER)) {
        return send(&mut out, "200 OK", "", LAYER);
    }
    if path != format!("/v2/lie/app/blobs/{}", digest(CONFIG)) {
        return send(&mut out, "404 Not Found", "", b"{}");
    }
    match lie {
        Lie::WrongDigest | Lie::HugeDescriptor => {
            let other = vec![b' '; CONFIG.len()];
            send(&mut out, "200 OK", "", &other)
        }
        Lie::ShortBody => send(&mut out, "200 OK", "", &CONFIG[..CONFIG.len() / 2]),
        Lie::HugeContentLength => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                10u64 << 30
            )?;
            out.write_all(&CONFIG[..8])
        }
        Lie::RedirectLoop => send(
            &mut out,
            "307 Temporary Redirect",
            &format!("Location: {path}\r\n"),
            b"",
        ),
        Lie::HugeManifestLength | Lie::EndlessManifest => send(&mut out, "200 OK", "", CONFIG),
        Lie::Stall => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                CONFIG.len()
            )?;
            out.flush()?;
            std::thread::sleep(Duration::from_secs(60));
            Ok(())
        }
    }
}
