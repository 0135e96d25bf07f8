"""The qos-hooks element in a domain's ``<metadata>``: which profile a domain wants.

::

    <metadata>
      <qos-hooks:qos xmlns:qos-hooks="https://qos-hooks.org/xmlns/domain/1.0"
                     profile="gold" applied="gold"/>
    </metadata>

* ``profile``: the profile this domain gets at every start (written by
  ``qos-hooks set --store-profile``, into the persistent definition and/or
  the live one).  Without it the agent uses ``default_profile``.
* ``applied``: written by the agent into the LIVE metadata only, after it
  applied a profile to the running domain (``qos-hooks set --live``'s code
  path).  Live metadata dies with the domain, so the next start applies the
  profile again, and a restarted agent knows, from libvirt alone, which
  running domains already have theirs.

libvirt keeps one element per namespace URI under ``<metadata>``
(virDomainSetMetadata with VIR_DOMAIN_METADATA_ELEMENT, libvirt
src/conf/domain_conf.c virDomainDefSetMetadata): setting it replaces the
previous one.  Reading is done on the domain XML (no extra libvirt call).
"""

from lxml import etree

NS = "https://qos-hooks.org/xmlns/domain/1.0"
PREFIX = "qos-hooks"
TAG = "qos"


class ProfileMeta:
    __slots__ = ("profile", "applied")

    def __init__(self, profile=None, applied=None):
        self.profile = profile or None
        self.applied = applied or None

    def __eq__(self, other):
        return isinstance(other, ProfileMeta) and (self.profile, self.applied) == (
            other.profile, other.applied)

    def __repr__(self):
        return "ProfileMeta(profile=%r, applied=%r)" % (self.profile, self.applied)

    def to_xml(self):
        """The element as virDomainSetMetadata takes it (namespace given apart)."""
        el = etree.Element(TAG)
        if self.profile:
            el.set("profile", self.profile)
        if self.applied:
            el.set("applied", self.applied)
        return etree.tostring(el, encoding="unicode")


def read(root):
    """ProfileMeta from a parsed ``<domain>`` element (lxml), empty when absent."""
    md = root.find("metadata")
    if md is None:
        return ProfileMeta()
    el = md.find("{%s}%s" % (NS, TAG))
    if el is None:
        return ProfileMeta()
    return ProfileMeta(el.get("profile"), el.get("applied"))


def store(libvirt, dom, meta, flags):
    """Write ``meta`` into the domain's metadata (``flags``: AFFECT_LIVE / CONFIG)."""
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta.to_xml(), PREFIX, NS, flags)
