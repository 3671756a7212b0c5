//! Debug aid: prints the MIME structure mail-parser sees. cargo run --example parts FILE
use mail_parser::{MessageParser, MimeHeaders, PartType};
fn main() {
    let raw = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    let m = MessageParser::default().parse(&raw).unwrap();
    for (i, p) in m.parts.iter().enumerate() {
        let ct = p
            .content_type()
            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
            .unwrap_or_default();
        let kind = match &p.body {
            PartType::Text(t) => format!("Text({})", t.len()),
            PartType::Html(_) => "Html".into(),
            PartType::Binary(b) => format!("Binary({})", b.len()),
            PartType::InlineBinary(_) => "Inline".into(),
            PartType::Message(_) => "Message".into(),
            PartType::Multipart(v) => format!("Multipart{v:?}"),
        };
        println!("{i}: {ct} {kind}");
    }
}
