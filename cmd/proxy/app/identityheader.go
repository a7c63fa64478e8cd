package app

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/imds-proxy/imds-proxy/pkg/imds"
)

// readIdentityHeaderFile reads the App Service endpoint's secret from
// path: at most imds.MaxIdentityHeaderLength characters and one line end
// ("\n" or "\r\n", as `echo` and editors leave it), checked by
// imds.CheckIdentityHeader. No error contains the file's content.
//
// The file is read once, at start, not again when it changes (kubelet
// updates a mounted Secret within a minute or two). The apps read
// IDENTITY_HEADER once too, when their container starts, from the same
// Secret: a proxy that followed the file would refuse every app still
// running with the value it started with. After rotating the Secret,
// restart the pod, so that the apps and the proxy start from the same
// value.
func readIdentityHeaderFile(path string) (imds.IdentityHeader, error) {
	f, err := os.Open(path) //nolint:gosec // G304: the operator's --identity-header-file
	if err != nil {
		return "", unwrapPathError(err)
	}
	defer f.Close()
	const limit = imds.MaxIdentityHeaderLength + len("\r\n")
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return "", unwrapPathError(err)
	}
	if len(b) > limit {
		return "", fmt.Errorf("is longer than %d bytes", limit)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if err := imds.CheckIdentityHeader(s); err != nil {
		return "", errors.New("the secret " + err.Error())
	}
	return imds.IdentityHeader(s), nil
}
