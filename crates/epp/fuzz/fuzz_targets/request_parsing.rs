#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    llmd_epp::fuzz_input::request_parsing(data);
});
