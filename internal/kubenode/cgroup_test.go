package kubenode

import (
	"reflect"
	"testing"
)

// mountinfo of this machine kind (hybrid cgroups), trimmed.
const hybridMountinfo = `22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
25 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
27 26 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
28 26 0:25 / /sys/fs/cgroup/memory rw,relatime shared:9 master:3 - cgroup cgroup rw,memory
29 26 0:26 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
30 26 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
31 22 0:28 / /tmp/with\040space rw - cgroup cgroup rw,pids
32 22 0:29 / /proc rw - proc proc rw
`

func TestCgroupMounts(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"hybrid", hybridMountinfo, []string{"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/tmp/with space"}},
		{"v2 only", "30 26 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", []string{"/sys/fs/cgroup"}},
		{"duplicate mount point once", "1 0 0:1 / /c rw - cgroup cgroup rw,cpu\n2 0 0:1 / /c rw - cgroup cgroup rw,cpu\n", []string{"/c"}},
		{"no separator", "27 26 0:24 / /sys/fs/cgroup/cpu rw cgroup cgroup rw,cpu\n", nil},
		{"too few fields", "27 26 / - cgroup cgroup rw\n", nil},
		{"relative mount point", "27 26 0:24 / cpu rw - cgroup cgroup rw\n", nil},
		{"empty type", "27 26 0:24 / /c rw - \n", nil},
		{"not cgroup", "27 26 0:24 / /c rw - cgroupfs x rw\n", nil},
		{"empty", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cgroupMounts(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:     "/a b",
		`/a\011\012`:  "/a\t\n",
		`/back\134`:   `/back\`,
		`/short\04`:   `/short\04`,
		`/bad\999`:    `/bad\999`,
		`/over\777`:   `/over\777`, // > 255: not a byte
		`/trailing\\`: `/trailing\\`,
		`/plain`:      "/plain",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzCgroupMounts: any mountinfo text yields absolute, clean paths only.
func FuzzCgroupMounts(f *testing.F) {
	f.Add(hybridMountinfo)
	f.Add(`1 0 0:1 / /a\0 - cgroup2 x`)
	f.Fuzz(func(t *testing.T, in string) {
		for _, m := range cgroupMounts(in) {
			if m == "" || m[0] != '/' {
				t.Fatalf("mount point %q is not absolute", m)
			}
		}
	})
}
