//! k3s config rendering (filled in by the render work).
