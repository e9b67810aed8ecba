//! The backward-compatibility rule of `schemas/`: every schema version ever written must be
//! readable by the current (reader) schema, checked with apache-avro's schema compatibility.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

use crate::SchemaError;
use crate::codec::{CURRENT_NOTE_SCHEMA_FILE, EMBEDDED_SCHEMA_FILES};

/// The schema files compiled into this crate, as (file name, JSON text).
pub fn embedded_schema_files() -> &'static [(&'static str, &'static str)] {
    EMBEDDED_SCHEMA_FILES
}

/// Checks that the current schema (`note.avsc`) can read every schema of `files`. The error
/// names the writer file and, through apache-avro's message, the field that breaks the rule
/// (such as a field added without a default).
pub fn check_backward_compatibility(files: &[(&str, &str)]) -> Result<(), SchemaError> {
    let parse = |file: &str, text: &str| {
        Schema::parse_str(text).map_err(|source| SchemaError::ParseSchema {
            file: file.to_owned(),
            source: Box::new(source),
        })
    };
    let (_, current_text) = files
        .iter()
        .find(|(file, _)| *file == CURRENT_NOTE_SCHEMA_FILE)
        .ok_or_else(|| SchemaError::FindCurrentSchema {
            file: CURRENT_NOTE_SCHEMA_FILE.to_owned(),
        })?;
    let reader = parse(CURRENT_NOTE_SCHEMA_FILE, current_text)?;
    for (file, text) in files {
        let writer = parse(file, text)?;
        SchemaCompatibility::can_read(&writer, &reader).map_err(|error| SchemaError::IncompatibleWriterSchema {
            file: (*file).to_owned(),
            reason: describe(&error),
        })?;
    }
    Ok(())
}

/// apache-avro's message with its causes, which is where a nested field is named.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_in_schemas_is_readable_by_the_current_one() {
        check_backward_compatibility(embedded_schema_files()).expect("schemas/ is backward compatible");
    }

    #[test]
    fn a_field_added_without_a_default_is_refused_naming_the_field() {
        let current = embedded_schema_files()
            .iter()
            .find(|(file, _)| *file == CURRENT_NOTE_SCHEMA_FILE)
            .map(|(_, text)| *text)
            .expect("current schema");
        let broken = current.replacen(
            r#""fields": ["#,
            r#""fields": [{"name": "color", "type": "string"},"#,
            1,
        );
        assert_ne!(broken, current, "the field was added");
        let mut files: Vec<(&str, &str)> = embedded_schema_files()
            .iter()
            .filter(|(file, _)| *file != CURRENT_NOTE_SCHEMA_FILE)
            .copied()
            .collect();
        files.push((CURRENT_NOTE_SCHEMA_FILE, &broken));
        let error = check_backward_compatibility(&files).expect_err("not backward compatible");
        let message = error.to_string();
        assert!(
            message.contains("'color'") && message.contains("note.v1.avsc"),
            "{message}"
        );
    }
}
