//! `tokenstore export`: every record as JSON (what `import --from json`
//! reads) or as a Zoho FileStore CSV (what the Zoho SDKs read back).

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::json;
use tokenstore::{Backend, Field, OAuthToken};

use crate::import::{column_field, EXPORT_VERSION, ZOHO_CSV_HEADER};
use crate::{sorted_tokens, CliError, CliResult};

#[derive(Args)]
pub struct ExportArgs {
    /// The output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Write the client secret and the access, refresh and grant tokens too.
    #[arg(long)]
    include_secrets: bool,
    /// Write to this file (created owner-only) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Format {
    /// A JSON document: `{"format": "tokenstore-export", "version": 1, "tokens": [...]}`.
    Json,
    /// The Zoho SDK FileStore CSV (header line, CRLF line ends).
    ZohoCsv,
}

pub fn run(store: &dyn Backend, args: &ExportArgs) -> CliResult {
    let mut tokens = sorted_tokens(store)?;
    if !args.include_secrets {
        tokens.iter_mut().for_each(strip_secrets);
    }
    let written = match &args.output {
        Some(path) => {
            let file = crate::keys::create_private(path, true)
                .map_err(|e| CliError::input(format!("cannot write {}: {e}", path.display())))?;
            let mut writer = BufWriter::new(file);
            write(&mut writer, &tokens, args)
                .and_then(|()| writer.flush())
                .and_then(|()| writer.get_ref().sync_all())
                .map_err(|e| CliError::input(format!("cannot write {}: {e}", path.display())))?;
            Some(path)
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            write(&mut stdout, &tokens, args)
                .and_then(|()| stdout.flush())
                .map_err(|e| CliError::input(format!("cannot write to stdout: {e}")))?;
            None
        }
    };
    if let Some(path) = written {
        eprintln!(
            "wrote {} records to {} (secrets {})",
            tokens.len(),
            path.display(),
            if args.include_secrets {
                "included"
            } else {
                "left out"
            }
        );
    }
    if !args.include_secrets && args.format == Format::ZohoCsv {
        eprintln!(
            "note: secrets were left out, so the Zoho SDK cannot use these tokens; \
             pass --include-secrets to write them"
        );
    }
    Ok(())
}

fn strip_secrets(token: &mut OAuthToken) {
    for field in Field::ALL.into_iter().filter(|f| f.is_secret()) {
        field
            .set_text(token, None)
            .expect("clearing a field never fails");
    }
}

fn write(out: &mut impl Write, tokens: &[OAuthToken], args: &ExportArgs) -> std::io::Result<()> {
    match args.format {
        Format::Json => {
            let document = json!({
                "format": "tokenstore-export",
                "version": EXPORT_VERSION,
                "secrets_included": args.include_secrets,
                "tokens": tokens,
            });
            serde_json::to_writer_pretty(&mut *out, &document)?;
            writeln!(out)
        }
        Format::ZohoCsv => {
            let mut writer = csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(out);
            // Each of Zoho's columns holds the field that import reads it into.
            let fields = ZOHO_CSV_HEADER
                .map(|column| column_field(column).expect("every FileStore column names a field"));
            writer.write_record(ZOHO_CSV_HEADER)?;
            for t in tokens {
                writer.write_record(fields.map(|field| field.text(t).unwrap_or_default()))?;
            }
            writer.flush()
        }
    }
}
