// Command k8s-schemas turns the Kubernetes OpenAPI v2 document
// (api/openapi-spec/swagger.json of the k8s.io/kubernetes Go module) into the
// standalone JSON schemas kubeconform reads, laid out like kubeconform's
// default registry:
//
//	OUT/<version>-standalone/<kind>[-<group>]-<apiversion>.json
//	OUT/<version>-standalone-strict/<kind>[-<group>]-<apiversion>.json
//
// so that `kubeconform -schema-location 'OUT/{{ .NormalizedKubernetesVersion
// }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json'`
// validates offline. It does what openapi2jsonschema (--kubernetes --expanded
// --stand-alone [--strict]) does:
//
//   - one file per group/version/kind of every definition that has
//     x-kubernetes-group-version-kind, its apiVersion and kind pinned by enum;
//   - every $ref inlined (a recursive reference, only found in CRD schemas,
//     becomes {} so the output stays finite);
//   - format int-or-string becomes oneOf string/integer, and a Quantity
//     oneOf string/number (the API server takes `cpu: 1`);
//   - an optional property (not in its object's required list) may be null,
//     as the API server accepts;
//   - strict: additionalProperties false on every object that lists its
//     properties and does not say otherwise (unknown fields are errors).
//
// Descriptions and patch-strategy hints are dropped: validation does not use
// them and the files stay small. Only the standard library is used, so it
// builds offline once Go is there.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

const refPrefix = "#/definitions/"

func main() {
	swagger := flag.String("swagger", "", "path of the Kubernetes swagger.json (OpenAPI v2)")
	out := flag.String("out", "", "output directory (created)")
	version := flag.String("version", "", "Kubernetes version as kubeconform normalises it, e.g. v1.34.2")
	flag.Parse()
	if *swagger == "" || *out == "" || !strings.HasPrefix(*version, "v") {
		fmt.Fprintln(os.Stderr, "usage: k8s-schemas -swagger swagger.json -out DIR -version vX.Y.Z")
		os.Exit(2)
	}
	n, err := run(*swagger, *out, *version)
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s-schemas:", err)
		os.Exit(1)
	}
	fmt.Printf("k8s-schemas: %d schemas (standalone and standalone-strict) for %s in %s\n", n, *version, *out)
}

func run(swaggerPath, out, version string) (int, error) {
	raw, err := os.ReadFile(swaggerPath)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return 0, fmt.Errorf("%s: %w", swaggerPath, err)
	}
	if len(doc.Definitions) == 0 {
		return 0, fmt.Errorf("%s: no definitions", swaggerPath)
	}
	names := make([]string, 0, len(doc.Definitions))
	for name := range doc.Definitions {
		names = append(names, name)
	}
	slices.Sort(names) // deterministic output when two definitions share a file name
	count := 0
	for _, strict := range []bool{false, true} {
		dir := filepath.Join(out, version+"-standalone")
		if strict {
			dir += "-strict"
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, err
		}
		c := converter{defs: doc.Definitions, strict: strict}
		for _, name := range names {
			def := doc.Definitions[name]
			for _, gvk := range groupVersionKinds(def) {
				schema := c.convert(def, map[string]bool{name: true}).(map[string]any)
				pin(schema, gvk)
				if strict {
					schema["additionalProperties"] = false
				}
				data, err := json.Marshal(schema)
				if err != nil {
					return 0, fmt.Errorf("%s: %w", name, err)
				}
				if err := os.WriteFile(filepath.Join(dir, gvk.fileName()), data, 0o644); err != nil {
					return 0, err
				}
				count++
			}
		}
	}
	return count / 2, nil
}

type gvk struct{ group, version, kind string }

// fileName follows kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}:
// lower-case kind, the group's first label (none for the core group), the
// version.
func (g gvk) fileName() string {
	name := strings.ToLower(g.kind)
	if g.group != "" {
		name += "-" + strings.ToLower(strings.Split(g.group, ".")[0])
	}
	return name + "-" + strings.ToLower(g.version) + ".json"
}

func (g gvk) apiVersion() string {
	if g.group == "" {
		return g.version
	}
	return g.group + "/" + g.version
}

func groupVersionKinds(def map[string]any) []gvk {
	list, _ := def["x-kubernetes-group-version-kind"].([]any)
	var out []gvk
	for _, item := range list {
		m, _ := item.(map[string]any)
		g, _ := m["group"].(string)
		v, _ := m["version"].(string)
		k, _ := m["kind"].(string)
		if v != "" && k != "" {
			out = append(out, gvk{g, v, k})
		}
	}
	return out
}

// pin restricts apiVersion and kind to the file's group/version/kind.
func pin(schema map[string]any, g gvk) {
	props, _ := schema["properties"].(map[string]any)
	if props == nil {
		return
	}
	if _, ok := props["apiVersion"]; ok {
		props["apiVersion"] = map[string]any{"type": "string", "enum": []any{g.apiVersion()}}
	}
	if _, ok := props["kind"]; ok {
		props["kind"] = map[string]any{"type": "string", "enum": []any{g.kind}}
	}
}

type converter struct {
	defs   map[string]map[string]any
	strict bool
}

// dropped keys: documentation and server-side patch hints.
func dropped(key string) bool {
	switch key {
	case "description", "x-kubernetes-patch-strategy", "x-kubernetes-patch-merge-key",
		"x-kubernetes-group-version-kind":
		return true
	}
	return false
}

// convert returns a fresh copy of node with references inlined and the
// rules of the package comment applied. stack holds the definitions being
// expanded (recursion guard).
func (c converter) convert(node any, stack map[string]bool) any {
	switch n := node.(type) {
	case []any:
		out := make([]any, len(n))
		for i, v := range n {
			out[i] = c.convert(v, stack)
		}
		return out
	case map[string]any:
		if ref, ok := n["$ref"].(string); ok {
			name := strings.TrimPrefix(ref, refPrefix)
			switch {
			case name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
				return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
			case stack[name]:
				return map[string]any{}
			}
			def, ok := c.defs[name]
			if !ok {
				panic(fmt.Sprintf("unresolved $ref %q", ref))
			}
			inner := make(map[string]bool, len(stack)+1)
			for k := range stack {
				inner[k] = true
			}
			inner[name] = true
			return c.convert(def, inner)
		}
		if f, _ := n["format"].(string); f == "int-or-string" {
			return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
		}
		out := make(map[string]any, len(n))
		for k, v := range n {
			if dropped(k) {
				continue
			}
			switch k {
			case "properties":
				props, _ := v.(map[string]any)
				required := map[string]bool{}
				if req, ok := n["required"].([]any); ok {
					for _, r := range req {
						if s, ok := r.(string); ok {
							required[s] = true
						}
					}
				}
				conv := make(map[string]any, len(props))
				for name, p := range props {
					cp := c.convert(p, stack)
					if !required[name] {
						cp = nullable(cp)
					}
					conv[name] = cp
				}
				out[k] = conv
			case "items", "additionalProperties", "allOf", "anyOf", "oneOf", "not":
				out[k] = c.convert(v, stack)
			default:
				out[k] = v // scalars, enums, required lists, x- extensions
			}
		}
		if c.strict {
			if _, has := out["properties"]; has {
				if _, set := out["additionalProperties"]; !set {
					out["additionalProperties"] = false
				}
			}
		}
		return out
	default:
		return node
	}
}

// nullable lets an optional property be null (the API server treats a null
// optional field as unset, and Helm templates produce such nulls).
func nullable(schema any) any {
	m, ok := schema.(map[string]any)
	if !ok {
		return schema
	}
	switch t := m["type"].(type) {
	case string:
		if t != "null" {
			m["type"] = []any{t, "null"}
		}
	case nil:
		if alts, ok := m["oneOf"].([]any); ok {
			m["oneOf"] = append(alts, map[string]any{"type": "null"})
		}
	}
	return m
}
