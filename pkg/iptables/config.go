package iptables

import (
	"errors"
	"fmt"
	"net/netip"
)

// Defaults match the azure-workload-identity webhook and the proxy image.
const (
	// DefaultProxyPort is the loopback port the proxy sidecar listens on.
	DefaultProxyPort uint16 = 8000
	// DefaultProxyUID is the numeric UID the proxy image runs as.
	DefaultProxyUID = 1501
	// DefaultMetadataPort is the TCP port of the instance metadata service.
	DefaultMetadataPort uint16 = 80
)

// DefaultMetadataIP is the link-local address of the instance metadata service.
var DefaultMetadataIP = netip.AddrFrom4([4]byte{169, 254, 169, 254})

// MaxUID is the largest UID the owner match accepts; 4294967295 is (uid_t)-1
// and never names a real user.
const MaxUID = 1<<32 - 2

// Config says which traffic to redirect where. All fields are required; use
// Validate before Plan when the values come from outside the program.
type Config struct {
	// ProxyPort is the loopback port traffic is redirected to.
	ProxyPort uint16
	// ProxyUID is the UID whose traffic is left alone, so the proxy itself
	// reaches the real metadata service.
	ProxyUID int
	// MetadataIP is the IPv4 address whose traffic is captured.
	MetadataIP netip.Addr
	// MetadataPort is the TCP port whose traffic is captured.
	MetadataPort uint16
}

// Validate reports the first value in c that the rules cannot express.
func (c Config) Validate() error {
	switch {
	case c.ProxyPort == 0:
		return errors.New("proxy port must be between 1 and 65535")
	case c.MetadataPort == 0:
		return errors.New("metadata port must be between 1 and 65535")
	case c.ProxyUID < 0 || c.ProxyUID > MaxUID:
		return fmt.Errorf("proxy UID must be between 0 and %d", MaxUID)
	case !c.MetadataIP.IsValid():
		return errors.New("metadata IP is not set")
	case !c.MetadataIP.Is4():
		return fmt.Errorf("metadata IP %s is not an IPv4 address", c.MetadataIP)
	case c.MetadataIP.IsUnspecified() || c.MetadataIP.IsMulticast() || c.MetadataIP == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("metadata IP %s is not a unicast address", c.MetadataIP)
	}
	return nil
}
