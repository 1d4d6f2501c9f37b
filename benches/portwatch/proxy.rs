//! The pass-through TCP proxy between the daemon and the simulator: it frames the HTTP/1.1
//! requests of each connection and stamps the moment a request head is complete.

use super::*;

#[derive(Default)]
pub(crate) struct ProxyLog {
    pub(crate) t0: Option<Instant>,
    pub(crate) times: Vec<Instant>,
    pub(crate) unframed: u64,
}

impl ProxyLog {
    pub(crate) fn count(&self) -> usize {
        self.times.len()
    }
}

pub(crate) async fn proxy_accept(
    listener: TcpListener,
    upstream: SocketAddr,
    log: Arc<Mutex<ProxyLog>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let log = log.clone();
        tokio::spawn(async move {
            let _ = proxy_connection(client, upstream, log).await;
        });
    }
}

/// Forwards one connection both ways, stamping each request head (client → server).
pub(crate) async fn proxy_connection(
    client: TcpStream,
    upstream: SocketAddr,
    log: Arc<Mutex<ProxyLog>>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = client_read.read(&mut buf).await?;
        if n == 0 {
            let _ = server_write.shutdown().await;
            break;
        }
        let now = Instant::now();
        let heads = framer.feed(&buf[..n]);
        if heads > 0 || framer.broken {
            let mut l = log.lock().unwrap();
            l.times.extend(std::iter::repeat_n(now, heads));
            if framer.broken {
                l.unframed += 1;
                framer = Framer::default();
            }
        }
        server_write.write_all(&buf[..n]).await?;
    }
    let _ = down.await;
    Ok(())
}

/// Splits an HTTP/1.1 client byte stream into requests (`Content-Length` bodies).
#[derive(Default)]
pub(crate) struct Framer {
    pub(crate) head: Vec<u8>,
    pub(crate) body_left: usize,
    /// Chunked or otherwise unframeable input was seen.
    pub(crate) broken: bool,
}

impl Framer {
    /// Feeds bytes; returns how many request heads were completed by them.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> usize {
        let mut heads = 0;
        while !data.is_empty() && !self.broken {
            if self.body_left > 0 {
                let k = self.body_left.min(data.len());
                self.body_left -= k;
                data = &data[k..];
                continue;
            }
            let byte = data[0];
            data = &data[1..];
            // Stray CRLFs between requests are allowed.
            if self.head.is_empty() && (byte == b'\r' || byte == b'\n') {
                continue;
            }
            self.head.push(byte);
            if self.head.ends_with(b"\r\n\r\n") {
                heads += 1;
                let head = String::from_utf8_lossy(&self.head).to_ascii_lowercase();
                self.head.clear();
                for line in head.lines() {
                    if let Some(v) = line.strip_prefix("content-length:") {
                        match v.trim().parse() {
                            Ok(n) => self.body_left = n,
                            Err(_) => self.broken = true,
                        }
                    } else if line.starts_with("transfer-encoding:") && line.contains("chunked") {
                        self.broken = true;
                    }
                }
            } else if self.head.len() > 64 * 1024 {
                self.broken = true;
            }
        }
        heads
    }
}
