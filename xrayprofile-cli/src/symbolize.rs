//! `xrayprofile symbolize --binary PATH FILES...`: names the functions of
//! address-level profiles (`XRAYPROFILE_SYMBOLIZE=false`) from the
//! unstripped binary the function ran, found by its GNU build ID among the
//! profile's mappings. A binary whose build ID is in no mapping is refused:
//! its addresses would name the wrong functions.
//!
//! Names are made as the library makes them in process: DWARF frames
//! (inlined functions first) or the symbol table, demangled without the
//! hash, `<X as Trait>::method` written `X::method`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use addr2line::Loader;
use object::{Object, ObjectSegment};
use pprof::protos::{Function, Line, Profile};

use crate::console;
use crate::error::{CliError, CliResult};
use crate::info::text;
use crate::profile_file;

/// The binary: its build ID, its loadable segments and its debug info.
struct Binary {
    build_id: String,
    /// `(file offset, file size, virtual address)` of each segment.
    segments: Vec<(u64, u64, u64)>,
    loader: Loader,
}

impl Binary {
    fn open(path: &Path) -> CliResult<Binary> {
        let bytes = std::fs::read(path)
            .map_err(|e| CliError::new(format!("cannot read `{}`: {e}", path.display())))?;
        let file = object::File::parse(bytes.as_slice()).map_err(|e| {
            CliError::new(format!(
                "`{}` is not an executable this tool reads ({e}); give the unstripped ELF binary",
                path.display()
            ))
        })?;
        let build_id = match file.build_id() {
            Ok(Some(id)) => id.iter().map(|b| format!("{b:02x}")).collect(),
            _ => {
                return Err(CliError::new(format!(
                    "`{}` has no GNU build ID, so it cannot be matched with a profile; link with `-Wl,--build-id` (Rust's default on Linux)",
                    path.display()
                )));
            }
        };
        let segments = file
            .segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                (offset, size, s.address())
            })
            .collect();
        let loader = Loader::new(path).map_err(|e| {
            CliError::new(format!(
                "cannot read the debug info of `{}`: {e}",
                path.display()
            ))
        })?;
        Ok(Binary {
            build_id,
            segments,
            loader,
        })
    }

    /// The virtual address in the binary of file offset `offset`.
    fn address_of(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(start, size, _)| (*start..start.saturating_add(*size)).contains(&offset))
            .map(|(start, _, address)| address + (offset - start))
    }

    /// `(name, system name, file, line)` of each frame at `address`,
    /// innermost first.
    fn frames(&self, address: u64) -> Vec<(String, String, String, i64)> {
        let mut frames = Vec::new();
        if let Ok(mut iter) = self.loader.find_frames(address) {
            while let Ok(Some(frame)) = iter.next() {
                let Some(raw) = frame
                    .function
                    .as_ref()
                    .and_then(|f| f.raw_name().ok())
                    .map(|n| n.into_owned())
                else {
                    continue;
                };
                let (file, line) = frame.location.map_or((String::new(), 0), |l| {
                    (
                        l.file.unwrap_or_default().to_owned(),
                        l.line.map_or(0, i64::from),
                    )
                });
                frames.push((name_of(&raw), raw, file, line));
            }
        }
        if frames.is_empty()
            && let Some(raw) = self.loader.find_symbol(address)
        {
            frames.push((name_of(raw), raw.to_owned(), String::new(), 0));
        }
        frames
    }
}

/// Demangled without the hash, as `{:#}` prints it, then made readable.
fn name_of(raw: &str) -> String {
    let demangled =
        rustc_demangle::try_demangle(raw).map_or_else(|_| raw.to_owned(), |d| format!("{d:#}"));
    xrayprofile_rules::readable_name(&demangled).into_owned()
}

/// Symbolizes each file, writing `NAME.symbolized.pprof` beside it or into
/// `output`.
///
/// # Errors
/// The binary cannot be read or matches no mapping of a profile, a profile
/// cannot be read, or a result cannot be written.
pub(crate) fn run(binary: &Path, files: &[PathBuf], output: Option<&Path>) -> CliResult<()> {
    let binary_path = binary;
    let binary = Binary::open(binary)?;
    for file in files {
        let bytes = std::fs::read(file)
            .map_err(|e| CliError::new(format!("cannot read `{}`: {e}", file.display())))?;
        let mut profile = profile_file::decode(&bytes)
            .map_err(|e| CliError::new(format!("`{}`: {e}", file.display())))?;
        let named = symbolize(&mut profile, &binary).map_err(|why| {
            CliError::new(format!(
                "`{}` has GNU build ID {}, but {why} in `{}`; give --binary the unstripped binary of the build that was profiled (its build ID must match)",
                binary_path.display(),
                binary.build_id,
                file.display()
            ))
        })?;
        let name = file
            .file_name()
            .map_or_else(|| "profile".into(), |n| n.to_string_lossy().into_owned());
        let stem = name.strip_suffix(".pprof").unwrap_or(&name);
        let target = output
            .map_or_else(|| file.with_file_name(""), Path::to_path_buf)
            .join(format!("{stem}.symbolized.pprof"));
        if let Some(dir) = output {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::new(format!("cannot create `{}`: {e}", dir.display())))?;
        }
        let encoded = profile_file::encode(&profile)
            .map_err(|e| CliError::new(format!("cannot encode the profile: {e}")))?;
        std::fs::write(&target, encoded)
            .map_err(|e| CliError::new(format!("cannot write `{}`: {e}", target.display())))?;
        console::note(&format!(
            "{}: named {named} addresses; wrote {}",
            file.display(),
            target.display()
        ));
    }
    Ok(())
}

/// Names the profile's address-only locations in mappings of `binary`;
/// returns how many were named, or why the binary does not belong.
fn symbolize(profile: &mut Profile, binary: &Binary) -> Result<usize, String> {
    let matching: HashMap<u64, (u64, u64)> = profile
        .mapping
        .iter()
        .filter(|m| text(profile, m.build_id).eq_ignore_ascii_case(&binary.build_id))
        .map(|m| (m.id, (m.memory_start, m.file_offset)))
        .collect();
    if matching.is_empty() {
        let ids: Vec<String> = profile
            .mapping
            .iter()
            .filter(|m| m.build_id != 0)
            .map(|m| {
                format!(
                    "`{}` {}",
                    text(profile, m.filename),
                    text(profile, m.build_id)
                )
            })
            .collect();
        return Err(if ids.is_empty() {
            "there are no mappings with build IDs (is it an address-level profile, XRAYPROFILE_SYMBOLIZE=false?)".to_owned()
        } else {
            format!("no mapping has it (they have: {})", ids.join(", "))
        });
    }
    let mut strings: HashMap<String, i64> = profile
        .string_table
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i64::try_from(i).unwrap_or(0)))
        .collect();
    let mut intern = |profile: &mut Profile, s: &str| -> i64 {
        *strings.entry(s.to_owned()).or_insert_with(|| {
            profile.string_table.push(s.to_owned());
            i64::try_from(profile.string_table.len() - 1).unwrap_or(0)
        })
    };
    let mut functions: HashMap<(i64, i64, i64), u64> = HashMap::new();
    let mut next_function = profile.function.iter().map(|f| f.id).max().unwrap_or(0);
    let mut named = 0;
    let mut locations = std::mem::take(&mut profile.location);
    for location in &mut locations {
        let Some((start, offset)) = matching.get(&location.mapping_id) else {
            continue;
        };
        if !location.line.is_empty() {
            continue;
        }
        let Some(address) = location
            .address
            .checked_sub(*start)
            .and_then(|relative| binary.address_of(relative + offset))
        else {
            continue;
        };
        for (name, system_name, file, line) in binary.frames(address) {
            let key = (
                intern(profile, &name),
                intern(profile, &system_name),
                intern(profile, &file),
            );
            let function_id = *functions.entry(key).or_insert_with(|| {
                next_function += 1;
                profile.function.push(Function {
                    id: next_function,
                    name: key.0,
                    system_name: key.1,
                    filename: key.2,
                    start_line: 0,
                });
                next_function
            });
            location.line.push(Line { function_id, line });
        }
        if !location.line.is_empty() {
            named += 1;
        }
    }
    profile.location = locations;
    for mapping in &mut profile.mapping {
        if matching.contains_key(&mapping.id) {
            mapping.has_functions = true;
            mapping.has_filenames = true;
            mapping.has_line_numbers = true;
            mapping.has_inline_frames = true;
        }
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trait_impl_names_are_written_as_the_library_writes_them() {
        assert_eq!(
            name_of("_ZN4demo3Job4poll17h0123456789abcdefE"),
            "demo::Job::poll"
        );
        assert_eq!(name_of("_ZN4demo3job17h0123456789abcdefE"), "demo::job");
    }
}
