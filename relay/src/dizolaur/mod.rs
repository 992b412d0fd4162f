//! Dizolaur, the demo game. TODO
