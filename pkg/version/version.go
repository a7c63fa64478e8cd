// Package version holds build information set at link time.
package version

// Version is the release version, set with
// -ldflags "-X github.com/imds-proxy/imds-proxy/pkg/version.Version=v1.2.3".
var Version = "dev"
