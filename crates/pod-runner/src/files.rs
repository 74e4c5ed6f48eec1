//! File writes that a concurrent reader never sees half done.

use std::io::Write;
use std::path::Path;

/// Write `data` to `path` through a temporary file in the same directory and a
/// rename, so a process polling the file reads the old or the new content, never
/// a mix. Parent directories are created.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

/// Like [`write_atomic`], but only when the content differs; returns whether it wrote.
pub fn write_if_changed(path: &Path, data: &[u8]) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(false);
    }
    write_atomic(path, data)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_if_changed_leaves_identical_content_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a/b.txt");
        assert!(write_if_changed(&path, b"one").expect("write"));
        assert!(!write_if_changed(&path, b"one").expect("same"));
        assert!(write_if_changed(&path, b"two").expect("changed"));
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
    }
}
