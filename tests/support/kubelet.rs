//! A ConfigMap volume updated the way the kubelet does it (its AtomicWriter): the data
//! goes into a fresh hidden timestamped directory, the `..data` symlink is swapped to it
//! atomically with a rename, and each visible key is a symlink through `..data`. The
//! visible names never change on an update.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

pub struct ConfigMapVolume {
    pub dir: PathBuf,
    generation: u32,
}

impl ConfigMapVolume {
    pub fn new(dir: &Path, data: &[(&str, &str)]) -> Self {
        let mut volume = Self {
            dir: dir.to_owned(),
            generation: 0,
        };
        volume.update(data);
        volume
    }

    /// Publishes a new version of the whole ConfigMap.
    pub fn update(&mut self, data: &[(&str, &str)]) {
        self.generation += 1;
        let previous = std::fs::read_link(self.dir.join("..data")).ok();
        let version = format!("..2026_11_25_12_00_00.{:09}", self.generation);
        let version_dir = self.dir.join(&version);
        std::fs::create_dir(&version_dir).unwrap();
        for (key, value) in data {
            std::fs::write(version_dir.join(key), value).unwrap();
        }
        symlink(&version, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        for (key, _) in data {
            let visible = self.dir.join(key);
            if std::fs::symlink_metadata(&visible).is_err() {
                symlink(Path::new("..data").join(key), &visible).unwrap();
            }
        }
        if let Some(previous) = previous {
            std::fs::remove_dir_all(self.dir.join(previous)).unwrap();
        }
    }
}
