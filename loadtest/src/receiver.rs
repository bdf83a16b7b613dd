//! A webhook receiver for `flash-sale --webhook`: a minimal HTTP/1.1 server
//! (keep-alive, Content-Length bodies) that answers 204 to every POST and
//! remembers the distinct `webhook-id`s it got and when the last new one
//! arrived. Small on purpose: it shares the cores with the server.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    requests: u64,
    last_new: Option<Instant>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        Ok(Self { url, seen })
    }

    /// Distinct events received, requests (retries and duplicates
    /// included), and when the last new event arrived.
    pub fn counts(&self) -> (usize, u64, Option<Instant>) {
        let s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        (s.ids.len(), s.requests, s.last_new)
    }
}

async fn serve(stream: TcpStream, seen: Arc<Mutex<Seen>>) {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        let (mut length, mut id) = (0usize, String::new());
        line.clear();
        // The request line, then headers up to the blank line.
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            line.clear();
            match stream.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("webhook-id") {
                    id = value.trim().to_owned();
                }
            }
        }
        body.resize(length, 0);
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        {
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            s.requests += 1;
            if s.ids.insert(id) {
                s.last_new = Some(Instant::now());
            }
        }
        if stream
            .get_mut()
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}
