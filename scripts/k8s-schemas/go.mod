module github.com/wardvpn/ward/scripts/k8s-schemas

go 1.26
