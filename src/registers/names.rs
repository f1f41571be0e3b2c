//! Writing the names of the flags a register or record holds, for `Display`.

use core::fmt;

/// Writes `names` to `f` with `separator` between each two; returns whether there was any.
pub(crate) fn write_joined<'a>(
    f: &mut fmt::Formatter<'_>,
    names: impl IntoIterator<Item = &'a str>,
    separator: &str,
) -> Result<bool, fmt::Error> {
    let mut any = false;
    for name in names {
        if any {
            f.write_str(separator)?;
        }
        f.write_str(name)?;
        any = true;
    }
    Ok(any)
}
