//! Decoding a `text/event-stream` body into messages. Pure: bytes in, messages out; it never
//! touches the socket, so chunk boundaries (a frame split anywhere, even inside a UTF-8
//! character) are tested without a server.
//!
//! Only what Steward sends is interpreted: `id`, `event` and `data` fields, comment lines
//! (`: keepalive`) and blank-line frame ends. `retry` and unknown fields are ignored, as the
//! SSE specification asks.

/// One dispatched server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The `event:` field (Steward: the event type).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n` (Steward: the event as JSON).
    pub data: String,
}

/// Accumulates bytes and yields complete messages.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes after the last complete line.
    partial: Vec<u8>,
    /// Fields of the message being read.
    event: Option<String>,
    /// Its data lines so far.
    data: Vec<String>,
}

impl Decoder {
    /// Feeds one chunk of the body; returns the messages it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Message> {
        self.partial.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.partial.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if let Some(message) = self.line(&line) {
                out.push(message);
            }
        }
        out
    }

    /// Interprets one complete line; a blank line dispatches the message read so far.
    fn line(&mut self, line: &str) -> Option<Message> {
        if line.is_empty() {
            let event = self.event.take();
            if self.data.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(Message { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAMES: &str = "id: 1\nevent: created\ndata: {\"seq\":1}\n\n\
                          : keepalive\n\n\
                          id: 2\r\nevent: provision_started\r\ndata: {\"seq\":2}\r\n\r\n";

    fn expected() -> Vec<Message> {
        vec![
            Message {
                event: Some("created".into()),
                data: "{\"seq\":1}".into(),
            },
            Message {
                event: Some("provision_started".into()),
                data: "{\"seq\":2}".into(),
            },
        ]
    }

    #[test]
    fn whole_body_yields_every_message_and_skips_comments() {
        assert_eq!(Decoder::default().push(FRAMES.as_bytes()), expected());
    }

    #[test]
    fn any_split_point_yields_the_same_messages() {
        let bytes = FRAMES.as_bytes();
        for split in 0..=bytes.len() {
            let mut decoder = Decoder::default();
            let mut got = decoder.push(&bytes[..split]);
            got.extend(decoder.push(&bytes[split..]));
            assert_eq!(got, expected(), "split at byte {split}");
        }
    }

    #[test]
    fn byte_by_byte_keeps_multibyte_characters_whole() {
        let body = "data: {\"reason\":\"café ☕\"}\n\n";
        let mut decoder = Decoder::default();
        let got: Vec<Message> = body.bytes().flat_map(|b| decoder.push(&[b])).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, "{\"reason\":\"café ☕\"}");
    }

    #[test]
    fn multi_line_data_is_joined_and_an_unfinished_frame_waits() {
        let mut decoder = Decoder::default();
        assert!(decoder.push(b"data: a\ndata:b\n").is_empty());
        let got = decoder.push(b"\n");
        assert_eq!(
            got,
            vec![Message {
                event: None,
                data: "a\nb".into()
            }]
        );
    }
}
