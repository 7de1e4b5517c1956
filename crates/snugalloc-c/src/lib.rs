//! placeholder: the C front end is being written.
