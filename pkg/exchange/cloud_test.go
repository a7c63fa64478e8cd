package exchange

import "testing"

func TestInstanceDiscoveryDecision(t *testing.T) {
	cases := map[string]bool{
		"https://login.microsoftonline.com/":  true,
		"https://LOGIN.MICROSOFTONLINE.US":    true,
		"https://login.chinacloudapi.cn/":     true,
		"https://login.sovcloud-identity.sg/": true,
		"https://login.microsoftonline.de":    true,
		"https://127.0.0.1:8443/":             false,
		"https://localhost:8443/":             false,
		"https://login.example.internal/":     false,
		"https://login.microsoftonline.com.x": false,
		"https://microsoftonline.com/":        false,
		"::not a url":                         false,
		"":                                    false,
	}
	for host, want := range cases {
		if got := instanceDiscovery(host); got != want {
			t.Errorf("instanceDiscovery(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestResourceManagerFor(t *testing.T) {
	const (
		public = "https://management.azure.com/"
		usGov  = "https://management.usgovcloudapi.net/"
		china  = "https://management.chinacloudapi.cn/"
	)
	cases := []struct {
		host string
		want string
		ok   bool
	}{
		{"https://login.microsoftonline.com/", public, true},
		{"https://login.microsoft.com", public, true},
		{"https://login.windows.net/", public, true},
		{"https://sts.windows.net/", public, true},
		{"https://login.microsoftonline.us", usGov, true},
		{"https://login-us.microsoftonline.com/", usGov, true},
		{"https://login.usgovcloudapi.net/", usGov, true},
		{"https://LOGIN.CHINACLOUDAPI.CN/", china, true},
		{"https://login.partner.microsoftonline.cn/", china, true},
		{"https://login.microsoftonline.de/", public, false},
		{"https://login.sovcloud-identity.fr/", public, false},
		{"https://localhost:8443/", public, false},
		{"https://login.microsoftonline.com:8443/", public, true},
		{"::not a url", public, false},
		{"", public, false},
	}
	for _, tc := range cases {
		got, ok := ResourceManagerFor(tc.host)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ResourceManagerFor(%q) = %q, %v; want %q, %v", tc.host, got, ok, tc.want, tc.ok)
		}
	}
}

// TestCloudHostsAreLowerCase: lookups lower-case the host, so an entry
// with an upper-case letter could never match.
func TestCloudHostsAreLowerCase(t *testing.T) {
	for host := range cloudHosts {
		for _, r := range host {
			if r >= 'A' && r <= 'Z' {
				t.Errorf("cloudHosts key %q is not lower case", host)
				break
			}
		}
	}
}
