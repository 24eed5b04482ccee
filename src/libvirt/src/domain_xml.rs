//! What the driver needs from a domain's XML: identity, size, devices, and the shim's channel.

use crate::Error;

/// The name of the virtio-serial port the shim writes to, on the guest and in the domain XML.
pub const SHIM_CHANNEL: &str = "org.augur.shim";

/// A domain as its XML describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainXml {
    pub name: String,
    pub uuid: String,
    pub memory_kib: u64,
    pub vcpus: u32,
    /// The host-side Unix socket of the shim's virtio-serial channel, when the domain has one
    /// in bind mode (QEMU listens, augurd connects).
    pub shim_socket: Option<std::path::PathBuf>,
    /// Disk target names (`vda`, ...).
    pub disks: Vec<String>,
    /// Interface target names (`vnet0`, ...).
    pub interfaces: Vec<String>,
}

fn memory_kib(node: roxmltree::Node<'_, '_>) -> Option<u64> {
    let value: u64 = node.text()?.trim().parse().ok()?;
    let factor = match node.attribute("unit").unwrap_or("KiB") {
        "b" | "bytes" => return Some(value / 1024),
        "KB" => 1000.0 / 1024.0,
        "k" | "KiB" => 1.0,
        "MB" => 1e6 / 1024.0,
        "M" | "MiB" => 1024.0,
        "GB" => 1e9 / 1024.0,
        "G" | "GiB" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value as f64 * factor) as u64)
}

impl DomainXml {
    pub fn parse(xml: &str) -> Result<Self, Error> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| Error::Xml(e.to_string()))?;
        let root = doc.root_element();
        if root.tag_name().name() != "domain" {
            return Err(Error::Xml(format!(
                "root element is <{}>, not <domain>",
                root.tag_name().name()
            )));
        }
        let child = |name: &str| root.children().find(|n| n.has_tag_name(name));
        let text = |name: &str| {
            child(name)
                .and_then(|n| n.text())
                .map(|t| t.trim().to_string())
        };
        let name = text("name").ok_or_else(|| Error::Xml("the domain has no <name>".into()))?;
        let mut domain = DomainXml {
            name,
            uuid: text("uuid").unwrap_or_default(),
            memory_kib: child("currentMemory")
                .or_else(|| child("memory"))
                .and_then(memory_kib)
                .unwrap_or(0),
            vcpus: text("vcpu").and_then(|v| v.parse().ok()).unwrap_or(1),
            ..Default::default()
        };
        let Some(devices) = child("devices") else {
            return Ok(domain);
        };
        for device in devices.children().filter(|n| n.is_element()) {
            let sub = |name: &str| device.children().find(|n| n.has_tag_name(name));
            match device.tag_name().name() {
                "channel" if device.attribute("type") == Some("unix") => {
                    let target = sub("target");
                    let source = sub("source");
                    let is_shim = target.is_some_and(|t| {
                        t.attribute("type") == Some("virtio")
                            && t.attribute("name") == Some(SHIM_CHANNEL)
                    });
                    let bind =
                        source.is_some_and(|s| s.attribute("mode").unwrap_or("bind") == "bind");
                    if let (true, true, Some(path)) =
                        (is_shim, bind, source.and_then(|s| s.attribute("path")))
                    {
                        domain.shim_socket = Some(path.into());
                    }
                }
                "disk" => {
                    if let Some(dev) = sub("target").and_then(|t| t.attribute("dev")) {
                        domain.disks.push(dev.to_string());
                    }
                }
                "interface" => {
                    if let Some(dev) = sub("target").and_then(|t| t.attribute("dev")) {
                        domain.interfaces.push(dev.to_string());
                    }
                }
                _ => {}
            }
        }
        Ok(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<domain type='qemu' id='3'>
  <name>web1</name>
  <uuid>0b6f9c1e-1111-4222-8333-444455556666</uuid>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <devices>
    <disk type='file' device='disk'><source file='/x.img'/><target dev='vda' bus='virtio'/></disk>
    <interface type='network'><target dev='vnet3'/></interface>
    <channel type='unix'>
      <source mode='bind' path='/run/augur/web1.shim'/>
      <target type='virtio' name='org.augur.shim' state='connected'/>
    </channel>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/ga.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
  </devices>
</domain>"#;

    #[test]
    fn finds_identity_size_devices_and_the_shim_channel() {
        let d = DomainXml::parse(XML).unwrap();
        assert_eq!(d.name, "web1");
        assert_eq!(d.memory_kib, 262_144);
        assert_eq!(d.vcpus, 2);
        assert_eq!(
            d.shim_socket.as_deref(),
            Some(std::path::Path::new("/run/augur/web1.shim"))
        );
        assert_eq!(d.disks, ["vda"]);
        assert_eq!(d.interfaces, ["vnet3"]);
    }

    #[test]
    fn memory_units_and_a_domain_without_a_shim() {
        let d = DomainXml::parse("<domain><name>a</name><memory unit='MiB'>256</memory></domain>")
            .unwrap();
        assert_eq!(d.memory_kib, 262_144);
        assert_eq!(d.shim_socket, None);
        assert_eq!(d.vcpus, 1);
    }

    #[test]
    fn bad_xml_is_a_clear_error() {
        assert!(matches!(DomainXml::parse("<domain>"), Err(Error::Xml(_))));
        let e = DomainXml::parse("<network><name>x</name></network>").unwrap_err();
        assert!(e.to_string().contains("not <domain>"), "{e}");
        assert!(DomainXml::parse("<domain/>")
            .unwrap_err()
            .to_string()
            .contains("<name>"));
    }
}
