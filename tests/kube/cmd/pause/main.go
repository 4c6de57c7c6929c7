// pause is the sandbox process of every pod on the test node (containerd's
// sandbox_image): it holds the pod's namespaces and does nothing else until
// it is told to stop. Static (CGO_ENABLED=0), so its image is FROM scratch.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
