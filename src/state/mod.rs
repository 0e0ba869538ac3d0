//! State checkpoints of `live`: the host table and alert windows, saved atomically to the state
//! directory every report interval and at exit, loaded at start. (Being written.)
