//! Fuzzes the single-object Avro decoder with arbitrary record values: any input must decode
//! or yield a typed error, and a decoded note must re-encode and decode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rebound_schema::NoteCodec;

fuzz_target!(|data: &[u8]| {
    let codec = NoteCodec::embedded();
    if let Ok(note) = codec.decode(data) {
        let encoded = codec.encode(&note).expect("a decoded note re-encodes");
        assert_eq!(codec.decode(&encoded).expect("re-encoded note decodes"), note);
    }
});
