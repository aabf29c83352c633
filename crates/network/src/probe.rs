//! Each block's output shape, for the network chapter's layer table.
//!
//! A block that should appear in the table is wrapped in [`Seen`] (or reports
//! itself), and its forward pass hands its output shape to [`report`]. That
//! does nothing unless [`record_shapes`] is running, so the models' forward
//! code carries no bookkeeping. Parameters and MACs are counted from these
//! shapes and the VarStore (`util::layers::layer_table`).
use std::cell::RefCell;
use tch::{nn, nn::Module, Tensor};

/// One row: its name, the VarStore prefixes whose variables it owns, and
/// the output shape that flowed (batch dimension included).
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub name: String,
    pub prefixes: Vec<String>,
    pub shape: Vec<i64>,
}

thread_local! {
    static SHAPES: RefCell<Option<Vec<Shape>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns its result with every block output reported during it.
pub fn record_shapes<R>(f: impl FnOnce() -> R) -> (R, Vec<Shape>) {
    SHAPES.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let r = f();
    (
        r,
        SHAPES.with(|s| s.borrow_mut().take()).unwrap_or_default(),
    )
}

/// Hands a block's output shape to a running [`record_shapes`] (else does nothing).
pub fn report(name: &str, prefixes: &[&str], out: &Tensor) {
    SHAPES.with(|s| {
        if let Some(rows) = s.borrow_mut().as_mut() {
            rows.push(Shape {
                name: name.to_string(),
                prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
                shape: out.size(),
            });
        }
    });
}

/// A block with its VarStore name, reported after each forward pass.
#[derive(Debug)]
pub struct Seen<T> {
    pub name: String,
    /// Further prefixes whose variables this row owns (a norm applied before it).
    pub also: Vec<&'static str>,
    pub inner: T,
}

impl<T> Seen<T> {
    pub fn new(name: impl Into<String>, inner: T) -> Self {
        Self {
            name: name.into(),
            also: Vec::new(),
            inner,
        }
    }

    pub fn report(&self, out: Tensor) -> Tensor {
        let mut prefixes = vec![self.name.as_str()];
        prefixes.extend(&self.also);
        report(&self.name, &prefixes, &out);
        out
    }
}

impl Seen<nn::Conv2D> {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.report(self.inner.forward(x))
    }
}
