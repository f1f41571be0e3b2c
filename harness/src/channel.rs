//! The host end of a machine's migration channel (the kernel's COM2 on a socket chardev):
//! line-oriented ASCII, binary records as hex lines. The protocol is documented with the
//! kernel, in `kernel/src/migration.rs`; its words are `vmce_qemu_protocol::migration`'s.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;
use vmce_qemu_protocol::migration::{BEGIN, END, RECORD, REFUSED};

/// `line`'s text after its first word, when that word is `word`.
fn after_word<'line>(line: &'line str, word: &str) -> Option<&'line str> {
    line.strip_prefix(word)?.strip_prefix(' ')
}

/// A connected migration channel: a writer, and a thread reading lines.
pub struct MigrationChannel {
    writer: UnixStream,
    lines: Receiver<String>,
    /// Every line received, in order.
    received: Vec<String>,
    /// Received lines before this index belong to streams already taken.
    consumed: usize,
    /// Both directions, for failure reports.
    transcript: Vec<String>,
}

impl MigrationChannel {
    /// Connects to the chardev's socket.
    pub fn connect(socket: &Path) -> std::io::Result<Self> {
        let writer = UnixStream::connect(socket)?;
        let reader = writer.try_clone()?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if sender.send(line.trim_end_matches('\r').to_owned()).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            writer,
            lines,
            received: Vec::new(),
            consumed: 0,
            transcript: Vec::new(),
        })
    }

    /// Sends one line.
    pub fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.transcript.push(format!("-> {line}"));
        self.writer.write_all(format!("{line}\n").as_bytes())
    }

    /// Waits for one more line until `deadline`; `false` on timeout or end of stream.
    pub fn receive(&mut self, deadline: Instant) -> bool {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(line) => {
                self.keep(line);
                true
            }
            Err(_) => false,
        }
    }

    /// Collects every line already received.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.keep(line);
        }
    }

    fn keep(&mut self, line: String) {
        self.transcript.push(format!("<- {line}"));
        self.received.push(line);
    }

    /// The first received line containing `pattern`.
    pub fn find(&self, pattern: &str) -> Option<String> {
        self.received
            .iter()
            .find(|line| line.contains(pattern))
            .cloned()
    }

    /// The next complete `BEGIN` .. `END` stream not taken yet.
    pub fn take_stream(&mut self) -> Option<RecordStream> {
        let unread = self.received.get(self.consumed..)?;
        let begin = unread
            .iter()
            .position(|line| after_word(line, BEGIN).is_some())?;
        let end = begin
            + unread[begin..]
                .iter()
                .position(|line| after_word(line, END).is_some())?;
        let stream = RecordStream {
            lines: unread[begin..=end].to_vec(),
        };
        self.consumed += end + 1;
        Some(stream)
    }

    /// Everything sent (`->`) and received (`<-`).
    pub fn transcript(&self) -> &[String] {
        &self.transcript
    }
}

/// One record stream, as the migration channel carries it:
///
/// ```text
/// BEGIN <phase> format=<format> vcpus=<n>
/// RECORD <hex>          (or REFUSED <owner>: <reason>)
/// END records=<k>       (or END refused=<k>)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordStream {
    /// The lines, `BEGIN` to `END`.
    pub lines: Vec<String>,
}

impl RecordStream {
    /// A stream of `records` under the header `BEGIN <header>`.
    pub fn from_records(header: &str, records: &[Vec<u8>]) -> Self {
        let mut lines = vec![format!("{BEGIN} {header}")];
        lines.extend(records.iter().map(|record| {
            let hex: String = record.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("{RECORD} {hex}")
        }));
        lines.push(format!("{END} records={}", records.len()));
        Self { lines }
    }

    /// The `BEGIN` line.
    pub fn begin(&self) -> &str {
        &self.lines[0]
    }

    /// The `END` line.
    pub fn end(&self) -> &str {
        self.lines.last().map_or("", String::as_str)
    }

    /// The records, hex-decoded, in stream order.
    pub fn records(&self) -> Vec<Vec<u8>> {
        self.lines
            .iter()
            .filter_map(|line| after_word(line, RECORD))
            .map(|hex| {
                (0..hex.len())
                    .step_by(2)
                    .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex record"))
                    .collect()
            })
            .collect()
    }

    /// The text of each `REFUSED` line, after `REFUSED `.
    pub fn refusals(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|line| after_word(line, REFUSED))
            .collect()
    }
}
