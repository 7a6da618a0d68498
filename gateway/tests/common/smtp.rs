//! A minimal SMTP receiver on 127.0.0.1 for the channel tests: a real SMTP conversation with
//! lettre, the messages kept in memory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message as the SMTP receiver got it.
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub rcpt: Vec<String>,
    pub data: Vec<u8>,
}

impl Mail {
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.data)
            .expect("a MIME message")
    }

    pub fn notification_id(&self) -> String {
        self.parsed()
            .header_raw("X-Vigia-Notification-Id")
            .expect("X-Vigia-Notification-Id")
            .trim()
            .to_string()
    }
}

/// A minimal SMTP server on 127.0.0.1: 220, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
/// The first `fail_data` messages are refused after their data with `451` (try again later).
pub struct SmtpReceiver {
    pub addr: SocketAddr,
    pub mails: Arc<Mutex<Vec<Mail>>>,
    pub fail_data: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
}

impl SmtpReceiver {
    pub async fn start(fail_data: usize) -> SmtpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = SmtpReceiver {
            addr: listener.local_addr().unwrap(),
            mails: Default::default(),
            fail_data: Arc::new(AtomicUsize::new(fail_data)),
            refused: Default::default(),
        };
        let (mails, fail, refused) = (
            receiver.mails.clone(),
            receiver.fail_data.clone(),
            receiver.refused.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (mails, fail, refused) = (mails.clone(), fail.clone(), refused.clone());
                tokio::spawn(async move {
                    let _ = smtp_session(stream, mails, fail, refused).await;
                });
            }
        });
        receiver
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

fn address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_string()
}

async fn smtp_session(
    stream: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
    fail: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 localhost ESMTP vigia-test\r\n")
        .await?;
    let (mut from, mut rcpt) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-localhost\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" => b"250 localhost\r\n",
            "MAIL" => {
                from = address(&command);
                rcpt.clear();
                b"250 2.1.0 OK\r\n"
            }
            "RCPT" => {
                rcpt.push(address(&command));
                b"250 2.1.5 OK\r\n"
            }
            "DATA" => {
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = Vec::new();
                loop {
                    let mut l = String::new();
                    if lines.read_line(&mut l).await? == 0 {
                        return Ok(());
                    }
                    if l == ".\r\n" {
                        break;
                    }
                    // Dot-stuffing.
                    let l = l.strip_prefix('.').unwrap_or(&l);
                    data.extend_from_slice(l.as_bytes());
                }
                let failing = fail
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    refused.fetch_add(1, Ordering::SeqCst);
                    b"451 4.3.0 temporary failure, try again later\r\n"
                } else {
                    mails.lock().unwrap().push(Mail {
                        from: from.clone(),
                        rcpt: rcpt.clone(),
                        data,
                    });
                    b"250 2.0.0 queued\r\n"
                }
            }
            "RSET" => {
                rcpt.clear();
                b"250 2.0.0 OK\r\n"
            }
            "NOOP" => b"250 2.0.0 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 command not recognized\r\n",
        };
        write.write_all(reply).await?;
    }
}
