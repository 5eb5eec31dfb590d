//! A scripted stand-in for an OpenAI-compatible engine on loopback, for tests of the
//! backend's own logic: `GET /v1/models` names the engine (`owned_by`), `GET /props`
//! answers the given JSON (404 without), and each `POST .../completions` is answered by a
//! closure from the request's JSON body. Every POST body is recorded.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

type Handler = dyn Fn(&Value) -> (u16, Value) + Send + Sync;

pub struct Stub {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    gets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Stub {
    pub fn start(
        owned_by: &str,
        props: Option<Value>,
        handler: impl Fn(&Value) -> (u16, Value) + Send + Sync + 'static,
    ) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let gets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let models = json!({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": owned_by}]});
        let (b, g, s) = (bodies.clone(), gets.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (b, g, h) = (b.clone(), g.clone(), handler.clone());
                let (models, props) = (models.clone(), props.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &b, &g, &*h, &models, props.as_ref());
                });
            }
        });
        Stub {
            url: format!("http://127.0.0.1:{port}/v1"),
            bodies,
            gets,
            stop,
            port,
        }
    }

    /// The POST bodies received so far, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// The paths of the GETs received so far.
    pub fn gets(&self) -> Vec<String> {
        self.gets.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A reply with one choice per text: `(text, finish_reason)`; `usage.completion_tokens` is
/// `tokens` when there is one choice.
pub fn completion(choices: &[(&str, &str)], tokens: usize) -> Value {
    let cs: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, (text, finish))| json!({"index": i, "text": text, "finish_reason": finish}))
        .collect();
    json!({"object": "text_completion", "choices": cs, "usage": {"completion_tokens": tokens}})
}

fn serve(
    mut conn: TcpStream,
    bodies: &Mutex<Vec<Value>>,
    gets: &Mutex<Vec<String>>,
    handler: &Handler,
    models: &Value,
    props: Option<&Value>,
) -> std::io::Result<()> {
    let (head, body) = match super::proxy::read_request(&mut conn) {
        Ok(r) => r,
        // The client went away before a whole request: nothing to answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
        Err(e) => return Err(e),
    };
    let line = head.lines().next().unwrap_or("");
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (status, reply) = if line.starts_with("GET") {
        gets.lock().unwrap().push(path.clone());
        match path.as_str() {
            "/v1/models" => (200, models.clone()),
            "/props" => match props {
                Some(p) => (200, p.clone()),
                None => (404, json!({"error": {"message": "not found"}})),
            },
            _ => (404, json!({"error": {"message": "not found"}})),
        }
    } else {
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        bodies.lock().unwrap().push(v.clone());
        handler(&v)
    };
    let text = reply.to_string();
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
}
