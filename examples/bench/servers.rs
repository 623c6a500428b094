//! The two servers the benchmark brings along: the echo floor and a fake STS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// `bench echo-server SOCKET REPLY_FILE`: the round-trip floor. Same framing as the daemon
/// (4-byte big-endian length + payload), same runtime shape (tokio, 2 workers), one task per
/// connection, keep-alive until EOF — and no work at all: every request frame is answered
/// with the same canned payload (a real reply of our daemon, so both carry the same bytes).
pub fn echo_server(socket: &Path, reply_file: &Path) -> Result<(), String> {
    let reply = std::fs::read(reply_file).map_err(|e| format!("{}: {e}", reply_file.display()))?;
    let mut frame = (reply.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&reply);
    let frame: Arc<[u8]> = frame.into();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).map_err(|e| e.to_string())?;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let frame = frame.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 4];
                let mut body = Vec::with_capacity(256);
                loop {
                    if stream.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    body.resize(u32::from_be_bytes(len).min(1 << 16) as usize, 0);
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if stream.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// A fake STS on 127.0.0.1: answers every AssumeRole with fresh-looking credentials valid for
/// `lifetime`, after `delay` when the role ARN names the role `slow`. Runs on its own thread
/// and runtime for the life of the process.
pub struct FakeSts {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Requests answered so far.
    pub served: Arc<AtomicU64>,
}

pub fn fake_sts(delay: Duration, lifetime: Duration) -> Result<FakeSts, String> {
    let std_listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("fake STS: {e}"))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let addr: SocketAddr = std_listener.local_addr().map_err(|e| e.to_string())?;
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    std::thread::Builder::new()
        .name("fake-sts".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            delay + Duration::from_secs(30),
                            sts_request(stream, delay, lifetime, &counter),
                        )
                        .await;
                    });
                }
            });
        })
        .map_err(|e| e.to_string())?;
    Ok(FakeSts {
        url: format!("http://{addr}"),
        served,
    })
}

async fn sts_request(
    stream: tokio::net::TcpStream,
    delay: Duration,
    lifetime: Duration,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    let mut r = BufReader::new(stream);
    let mut content_length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; content_length.min(1 << 20)];
    r.read_exact(&mut body).await?;
    let body = String::from_utf8_lossy(&body);
    let role = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("RoleArn="))
        .map(|arn| arn.replace("%3A", ":").replace("%2F", "/"))
        .unwrap_or_default();
    let role_name = role.rsplit('/').next().unwrap_or("none").to_string();
    if role_name == "slow" {
        tokio::time::sleep(delay).await;
    }
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    let expiration = humantime::format_rfc3339_seconds(SystemTime::now() + lifetime);
    let xml = format!(
        r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>ASIAFAKESTS{n:09}</AccessKeyId>
      <SecretAccessKey>fakeSecretAccessKeyForTheBenchmark{n:09}</SecretAccessKey>
      <SessionToken>FakeSessionTokenForTheBenchmark{n:09}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <AssumedRoleId>AROAFAKESTS:{role_name}</AssumedRoleId>
      <Arn>arn:aws:sts::123456789012:assumed-role/{role_name}/bench</Arn>
    </AssumedRoleUser>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>00000000-0000-4000-8000-{n:012}</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>"#
    );
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        xml.len()
    );
    let mut stream = r.into_inner();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(xml.as_bytes()).await?;
    stream.shutdown().await
}
