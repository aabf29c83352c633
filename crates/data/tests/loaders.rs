//! The loaders on fixture files made here: good data round-trips, and each
//! kind of bad input gets an error that names the file and the problem.
use data::{idx, load_cifar10, load_mnist_like, DataError, Split};
use std::io::Write;
use std::path::{Path, PathBuf};

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gz(path: &Path, bytes: &[u8]) {
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(bytes).unwrap();
    e.finish().unwrap();
}

/// Three 2×3 images with pixels 0, 1, …, and labels 7, 0, 9.
fn mnist_fixture(d: &Path, gzipped: bool) {
    let pixels: Vec<u8> = (0..18).map(|i| (i * 15) as u8).collect();
    let images = idx::encode(&[3, 2, 3], &pixels);
    let labels = idx::encode(&[3], &[7, 0, 9]);
    if gzipped {
        gz(&d.join("t10k-images-idx3-ubyte.gz"), &images);
        gz(&d.join("t10k-labels-idx1-ubyte.gz"), &labels);
    } else {
        std::fs::write(d.join("t10k-images-idx3-ubyte"), images).unwrap();
        std::fs::write(d.join("t10k-labels-idx1-ubyte"), labels).unwrap();
    }
}

#[test]
fn mnist_files_load_gzipped_or_not() {
    for gzipped in [true, false] {
        let d = dir(&format!("ok{gzipped}"));
        mnist_fixture(&d, gzipped);
        let ds = load_mnist_like(&d, Split::Test).unwrap();
        assert_eq!(ds.images.size(), [3, 1, 2, 3]);
        assert_eq!(Vec::<i64>::try_from(&ds.labels).unwrap(), [7, 0, 9]);
        let px = Vec::<f32>::try_from(ds.images.flatten(0, -1)).unwrap();
        for (i, &v) in px.iter().enumerate() {
            assert_eq!(
                v,
                (i * 15) as f32 / 127.5 - 1.0,
                "pixel {i}: [0, 255] ↦ [−1, 1]"
            );
        }
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn cifar_batches_load_channel_major() {
    let d = dir("cifar");
    let mut rec = vec![4u8];
    rec.extend((0..3072).map(|i| (i / 1024 * 100) as u8)); // channel c = 100·c everywhere
    std::fs::write(d.join("test_batch.bin"), [rec.clone(), rec].concat()).unwrap();
    let ds = load_cifar10(&d, Split::Test).unwrap();
    assert_eq!(ds.images.size(), [2, 3, 32, 32]);
    for c in 0..3i64 {
        let v = ds
            .images
            .get(1)
            .get(c)
            .mean(tch::Kind::Float)
            .double_value(&[]);
        assert!((v - ((100 * c) as f64 / 127.5 - 1.0)).abs() < 1e-6);
    }
    let err = load_cifar10(&d, Split::Train).unwrap_err();
    assert!(err.to_string().contains("data_batch_1.bin"), "{err}");
    std::fs::remove_dir_all(d).unwrap();
}

fn err_of(d: &Path) -> String {
    load_mnist_like(d, Split::Test).unwrap_err().to_string()
}

#[test]
fn bad_inputs_name_the_file_and_the_problem() {
    // Missing folder.
    let missing = std::env::temp_dir().join("no-such-data-folder-xyz");
    let e = load_mnist_like(&missing, Split::Test).unwrap_err();
    assert!(matches!(e, DataError::MissingDir(_)));
    assert!(
        e.to_string()
            .contains("apt-get install dataset-fashion-mnist"),
        "{e}"
    );

    // Missing file.
    let d = dir("bad");
    mnist_fixture(&d, false);
    std::fs::remove_file(d.join("t10k-labels-idx1-ubyte")).unwrap();
    assert!(
        err_of(&d).contains("no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"),
        "{}",
        err_of(&d)
    );

    // Wrong magic number.
    std::fs::write(
        d.join("t10k-labels-idx1-ubyte"),
        [0x1f, 0x8b, 8, 1, 0, 0, 0, 3, 7, 0, 9],
    )
    .unwrap();
    let e = err_of(&d);
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("magic"),
        "{e}"
    );

    // Truncated data.
    let mut labels = idx::encode(&[3], &[7, 0, 9]);
    labels.pop();
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), labels).unwrap();
    assert!(err_of(&d).contains("truncated"), "{}", err_of(&d));

    // Image/label count mismatch.
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx::encode(&[2], &[7, 0])).unwrap();
    assert_eq!(
        err_of(&d),
        format!(
            "{} holds 3 images but {} holds 2 labels",
            d.join("t10k-images-idx3-ubyte").display(),
            d.join("t10k-labels-idx1-ubyte").display()
        )
    );

    // Inconsistent dimensions: a label file with 2 dimensions.
    std::fs::write(
        d.join("t10k-labels-idx1-ubyte"),
        idx::encode(&[3, 1], &[7, 0, 9]),
    )
    .unwrap();
    assert!(
        err_of(&d).contains("expected 1 dimension (N), found [3, 1]"),
        "{}",
        err_of(&d)
    );

    // A corrupt gzip.
    std::fs::remove_file(d.join("t10k-labels-idx1-ubyte")).unwrap();
    std::fs::write(
        d.join("t10k-labels-idx1-ubyte.gz"),
        b"\x1f\x8bnot really gzip",
    )
    .unwrap();
    assert!(
        err_of(&d).contains("not a valid gzip file"),
        "{}",
        err_of(&d)
    );
    std::fs::remove_dir_all(d).unwrap();
}
