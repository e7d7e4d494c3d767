#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wbs_fuzz::exif(data));
