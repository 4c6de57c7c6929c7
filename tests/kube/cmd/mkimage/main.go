// mkimage writes a container image FROM scratch as a docker-archive tarball,
// the format `ctr images import` (and `docker load`, `podman load`) read:
//
//	mkimage --name registry.k8s.io/pause:3.10 --out pause.tar --entrypoint /pause \
//	        [--user 65532:65532] HOSTFILE=/PATH/IN/IMAGE ...
//
// One layer holding the given files (mode 0755, owner root), a config with
// the entrypoint and user. Nothing is pulled: the test node has no registry,
// so every image it runs is made here from binaries built here. Timestamps
// are fixed so the same inputs make the same archive.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path"
	"strings"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("mkimage: ")
	name := flag.String("name", "", "image reference, e.g. registry.k8s.io/pause:3.10 (required)")
	out := flag.String("out", "", "archive to write (required)")
	entrypoint := flag.String("entrypoint", "", "entrypoint path inside the image (required)")
	user := flag.String("user", "", "user[:group] the image runs as by default")
	flag.Parse()
	if *name == "" || *out == "" || *entrypoint == "" || flag.NArg() == 0 {
		log.Fatal("usage: mkimage --name REF --out FILE --entrypoint PATH [--user U:G] HOSTFILE=/PATH ...")
	}
	layer, err := layerTar(flag.Args())
	if err != nil {
		log.Fatal(err)
	}
	if err := write(*out, *name, *entrypoint, *user, layer); err != nil {
		log.Fatal(err)
	}
}

// epoch: fixed file and image times, so archives are reproducible.
var epoch = time.Unix(0, 0).UTC()

func layerTar(specs []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, spec := range specs {
		src, dst, ok := strings.Cut(spec, "=")
		if !ok || !strings.HasPrefix(dst, "/") {
			return nil, fmt.Errorf("%q: want HOSTFILE=/PATH/IN/IMAGE", spec)
		}
		content, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		rel := strings.TrimPrefix(path.Clean(dst), "/")
		// Parent directories first, each once.
		for d := path.Dir(rel); d != "."; d = path.Dir(d) {
			if dirs[d] {
				break
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				return nil, err
			}
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o755, Size: int64(len(content)), ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(content); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// write lays out a docker-archive: manifest.json naming the config and the
// layer, the config (an OCI image config; diff_ids are the layer's digest as
// it is uncompressed), and the layer tar.
func write(out, name, entrypoint, user string, layer []byte) error {
	layerID := digest(layer)
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config": map[string]any{
			"Entrypoint": []string{entrypoint},
			"User":       user,
			"Env":        []string{"PATH=/"},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerID}},
		"history": []map[string]any{{"created": epoch.Format(time.RFC3339), "created_by": "mkimage"}},
	})
	if err != nil {
		return err
	}
	configName := digest(config) + ".json"
	layerName := layerID + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   configName,
		"RepoTags": []string{name},
		"Layers":   []string{layerName},
	}})
	if err != nil {
		return err
	}
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	entries := []struct {
		name    string
		content []byte
	}{{configName, config}, {layerName, layer}, {"manifest.json", manifest}}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: layerID + "/", Mode: 0o755, ModTime: epoch}); err != nil {
		return err
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.content)), ModTime: epoch}); err != nil {
			return err
		}
		if _, err := tw.Write(e.content); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}
