//! Weights placeholder
