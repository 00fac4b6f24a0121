//! `proc_info`: placeholder replaced below.
