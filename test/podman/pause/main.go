// Command pause is the infra ("pause") process of the pods test/podman plays.
// podman builds its default infra image around catatonit, which the Debian
// podman package only recommends; a static binary in a FROM scratch image
// keeps the test free of that package and of any registry pull. It sleeps
// until SIGTERM or SIGINT and exits 0.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
