//! The libvirt driver.
