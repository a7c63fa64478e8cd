package app

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/imds-proxy/imds-proxy/internal/cli"
	"github.com/imds-proxy/imds-proxy/internal/logging"
	"github.com/imds-proxy/imds-proxy/pkg/iptables"
)

// Mode values of --iptables-mode.
const (
	ModeAuto   = "auto"
	ModeNFT    = "nft"
	ModeLegacy = "legacy"
)

// DefaultTerminationLog is where Kubernetes reads a container's last words.
const DefaultTerminationLog = "/dev/termination-log"

// Options holds the raw command-line and environment input of proxy-init.
// Values stay strings until Validate, so a bad value yields one clear message
// naming the flag or variable it came from.
type Options struct {
	// ProxyPort is --proxy-port or PROXY_PORT.
	ProxyPort string
	// ProxyUID is --proxy-uid or PROXY_UID.
	ProxyUID string
	// MetadataIP is --metadata-ip or METADATA_IP.
	MetadataIP string
	// MetadataPort is --metadata-port or METADATA_PORT.
	MetadataPort string
	// IPTablesMode is --iptables-mode: ModeAuto, ModeNFT or ModeLegacy.
	IPTablesMode string
	// DryRun prints the plan without touching the kernel.
	DryRun bool
	// Check verifies the rules without changing them.
	Check bool
	// Cleanup removes our rules.
	Cleanup bool
	// TerminationLog is the file that receives a one-line failure reason.
	TerminationLog string
	// LogLevel is a level name of internal/logging: "", info, debug, trace
	// or all.
	LogLevel string
	// LockWait is how many seconds iptables waits for the xtables lock.
	LockWait int

	// source names the environment variable each value came from, for
	// error messages (see ApplyEnv).
	source cli.Sources
}

// NewOptions returns Options holding the defaults the webhook expects.
func NewOptions() *Options {
	return &Options{
		ProxyPort:      strconv.Itoa(int(iptables.DefaultProxyPort)),
		ProxyUID:       strconv.Itoa(iptables.DefaultProxyUID),
		MetadataIP:     iptables.DefaultMetadataIP.String(),
		MetadataPort:   strconv.Itoa(int(iptables.DefaultMetadataPort)),
		IPTablesMode:   ModeAuto,
		TerminationLog: DefaultTerminationLog,
		LogLevel:       "info",
		LockWait:       5,
	}
}

// AddFlags binds o to fs and returns the flags' environment fallbacks, for
// ApplyEnv.
func (o *Options) AddFlags(fs *pflag.FlagSet) *cli.Env {
	env := cli.NewEnv(fs)
	fs.StringVar(&o.ProxyPort, "proxy-port", o.ProxyPort, "loopback TCP port of the proxy sidecar that metadata traffic is redirected to")
	env.Bind("proxy-port", "PROXY_PORT")
	fs.StringVar(&o.ProxyUID, "proxy-uid", o.ProxyUID, "UID whose traffic is not redirected, so the proxy reaches the real metadata service")
	env.Bind("proxy-uid", "PROXY_UID")
	fs.StringVar(&o.MetadataIP, "metadata-ip", o.MetadataIP, "IPv4 address of the instance metadata service")
	env.Bind("metadata-ip", "METADATA_IP")
	fs.StringVar(&o.MetadataPort, "metadata-port", o.MetadataPort, "TCP port of the instance metadata service")
	env.Bind("metadata-port", "METADATA_PORT")
	fs.StringVar(&o.IPTablesMode, "iptables-mode", o.IPTablesMode, "iptables backend: auto (the one already holding rules in this network namespace, else nft), nft or legacy")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print the rules that would be applied and change nothing")
	fs.BoolVar(&o.Check, "check", false, "exit 0 only if the rules are in place exactly and our jumps are first in OUTPUT of the filter and nat tables; change nothing")
	fs.BoolVar(&o.Cleanup, "cleanup", false, "remove our chains and jumps from the filter and nat tables, and nothing else")
	fs.StringVar(&o.TerminationLog, "termination-log", o.TerminationLog, "file that receives a one-line reason on failure, when it exists and is writable")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, `log level: "" (warnings and errors), info, debug (every iptables step), trace or all`)
	fs.IntVar(&o.LockWait, "lock-wait", o.LockWait, "seconds each iptables command waits for the xtables lock")
	// Defined here rather than by cobra, which would add the shorthand -v:
	// options have no one-letter forms (only cobra's -h for --help).
	fs.Bool("version", false, "print the version and exit")
	return env
}

// ApplyEnv fills every flag that was not set on the command line from its
// environment variable, when that is set and not empty, and remembers where
// each value came from.
func (o *Options) ApplyEnv(env *cli.Env, lookupEnv func(string) (string, bool)) error {
	source, err := env.Apply(lookupEnv)
	o.source = source
	return err
}

// origin names where the value of flag came from, for error messages.
func (o *Options) origin(flag string) string {
	return o.source.Name(flag)
}

// Validate checks o and translates it into the iptables configuration. The
// error, if any, is one line naming the offending flag or variable.
func (o *Options) Validate() (iptables.Config, error) {
	var cfg iptables.Config
	var err error
	if cfg.ProxyPort, err = o.port("proxy-port", o.ProxyPort); err != nil {
		return cfg, err
	}
	if cfg.MetadataPort, err = o.port("metadata-port", o.MetadataPort); err != nil {
		return cfg, err
	}
	uid, perr := strconv.ParseInt(o.ProxyUID, 10, 64)
	if perr != nil || uid < 0 || uid > iptables.MaxUID {
		return cfg, fmt.Errorf("invalid %s %q: want a numeric UID from 0 to %d", o.origin("proxy-uid"), o.ProxyUID, iptables.MaxUID)
	}
	cfg.ProxyUID = int(uid)
	ip, perr := netip.ParseAddr(o.MetadataIP)
	if perr != nil || !ip.Is4() {
		return cfg, fmt.Errorf("invalid %s %q: want an IPv4 address such as 169.254.169.254", o.origin("metadata-ip"), o.MetadataIP)
	}
	cfg.MetadataIP = ip
	switch o.IPTablesMode {
	case ModeAuto, ModeNFT, ModeLegacy:
	default:
		return cfg, fmt.Errorf("invalid --iptables-mode %q: want auto, nft or legacy", o.IPTablesMode)
	}
	n := 0
	for _, set := range []bool{o.DryRun, o.Check, o.Cleanup} {
		if set {
			n++
		}
	}
	if n > 1 {
		return cfg, fmt.Errorf("--dry-run, --check and --cleanup exclude each other; give at most one")
	}
	if _, known := logging.ParseLevel(o.LogLevel); !known {
		return cfg, fmt.Errorf(`invalid --log-level %q: want "" (warnings and errors), info, debug (every iptables step), trace or all`, o.LogLevel)
	}
	if o.LockWait < 1 {
		return cfg, fmt.Errorf("invalid --lock-wait %d: want at least 1 second", o.LockWait)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid %s %q: %w", o.origin("metadata-ip"), o.MetadataIP, err)
	}
	return cfg, nil
}

func (o *Options) port(flag, v string) (uint16, error) {
	p, err := strconv.ParseUint(v, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("invalid %s %q: want a port number from 1 to 65535", o.origin(flag), v)
	}
	return uint16(p), nil
}
