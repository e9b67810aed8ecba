//! Fuzzes the producer's HTTP note decoder with arbitrary bodies: any input is accepted as
//! notes that encode, or refused with a message; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rebound_producer::note_json::parse_notes_body;
use rebound_schema::NoteCodec;

fuzz_target!(|data: &[u8]| {
    match parse_notes_body(data) {
        Ok(notes) => {
            for note in notes {
                NoteCodec::embedded().encode(&note).expect("an accepted note encodes");
            }
        }
        Err(problems) => assert!(!problems.is_empty()),
    }
});
