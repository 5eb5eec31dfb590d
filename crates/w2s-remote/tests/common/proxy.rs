//! A fault-injecting HTTP proxy on loopback in front of the real server: POSTs get the
//! configured fault (the first `n` only, or all); other requests always pass.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer with this status and a JSON error.
    Status(u16),
    /// 429 with `Retry-After: secs`.
    RetryAfter(u64),
    /// Read the request and never answer.
    Stall,
    /// Send half a response, then close the connection.
    Cut,
    /// 200 with a body that is not JSON.
    InvalidJson,
    /// Forward, then remove `logprobs` from every choice.
    StripLogprobs,
}

pub struct Proxy {
    pub url: String,
    posts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Proxy {
    /// Faults the first `first` POSTs (`None`: all of them).
    pub fn start(upstream: u16, fault: Fault, first: Option<usize>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let posts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (posts.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (p, s) = (p.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream, fault, first, &p, &s);
                });
            }
        });
        Proxy {
            url: format!("http://127.0.0.1:{port}/v1"),
            posts,
            stop,
            port,
        }
    }

    pub fn posts(&self) -> usize {
        self.posts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
    }
}

/// Reads one HTTP/1.1 request: its head and its body (by Content-Length).
pub fn read_request(conn: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    Ok((head, body))
}

/// Forwards one request and returns (status line, JSON body).
fn forward(upstream: u16, head: &str, body: &[u8]) -> std::io::Result<(String, Vec<u8>)> {
    let first = head.lines().next().unwrap_or("");
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    write!(
        up,
        "{first}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    up.write_all(body)?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw.get(split + 4..).unwrap_or(&[]).to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((
        head.lines()
            .next()
            .unwrap_or("HTTP/1.1 502 Bad Gateway")
            .to_string(),
        body,
    ))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..(i + 2 + n).min(b.len())]);
        b = b.get(i + 2 + n + 2..).unwrap_or(&[]);
    }
    out
}

fn reply(conn: &mut TcpStream, status: &str, extra: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        conn,
        "{status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body)
}

fn handle(
    mut conn: TcpStream,
    upstream: u16,
    fault: Fault,
    first: Option<usize>,
    posts: &AtomicUsize,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let (head, body) = read_request(&mut conn)?;
    if !(head.starts_with("POST")
        && head
            .lines()
            .next()
            .is_some_and(|l| l.contains("completions")))
    {
        let (status, body) = forward(upstream, &head, &body)?;
        return reply(&mut conn, &status, "", &body);
    }
    let n = posts.fetch_add(1, Ordering::SeqCst);
    if first.is_some_and(|f| n >= f) {
        let (status, body) = forward(upstream, &head, &body)?;
        return reply(&mut conn, &status, "", &body);
    }
    match fault {
        Fault::Status(code) => {
            let msg = format!(r#"{{"error":{{"message":"injected {code}"}}}}"#);
            reply(
                &mut conn,
                &format!("HTTP/1.1 {code} Injected"),
                "",
                msg.as_bytes(),
            )
        }
        Fault::RetryAfter(secs) => reply(
            &mut conn,
            "HTTP/1.1 429 Too Many Requests",
            &format!("Retry-After: {secs}\r\n"),
            b"{}",
        ),
        Fault::Stall => {
            for _ in 0..600 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
        Fault::Cut => {
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"choi")?;
            conn.shutdown(std::net::Shutdown::Both)
        }
        Fault::InvalidJson => reply(&mut conn, "HTTP/1.1 200 OK", "", b"<html>not json</html>"),
        Fault::StripLogprobs => {
            let (status, body) = forward(upstream, &head, &body)?;
            let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(cs) = v.get_mut("choices").and_then(|c| c.as_array_mut()) {
                for c in cs {
                    c["logprobs"] = serde_json::Value::Null;
                }
            }
            reply(&mut conn, &status, "", v.to_string().as_bytes())
        }
    }
}
