// Header fields kept as nghttp2 reference-counted buffers: received once, never copied
// until nghttp2 itself serializes them towards the other side.
#pragma once

#include <nghttp2/nghttp2.h>

#include <string_view>
#include <utility>
#include <vector>

namespace sepal {

inline std::string_view RcbufView(nghttp2_rcbuf* buf) {
  nghttp2_vec v = nghttp2_rcbuf_get_buf(buf);
  return {reinterpret_cast<const char*>(v.base), v.len};
}

class HeaderList {
 public:
  HeaderList() = default;
  ~HeaderList() { Clear(); }
  HeaderList(const HeaderList&) = delete;
  HeaderList& operator=(const HeaderList&) = delete;

  void Add(nghttp2_rcbuf* name, nghttp2_rcbuf* value, uint8_t flags) {
    nghttp2_rcbuf_incref(name);
    nghttp2_rcbuf_incref(value);
    fields_.push_back({name, value, flags});
  }
  void Clear() {
    for (Field& f : fields_) {
      nghttp2_rcbuf_decref(f.name);
      nghttp2_rcbuf_decref(f.value);
    }
    fields_.clear();
  }
  bool empty() const { return fields_.empty(); }
  size_t size() const { return fields_.size(); }

  // nghttp2_nv array pointing into the buffers, optionally followed by `extra` fields
  // (whose storage the caller keeps alive). nghttp2 copies on submit, so the result only
  // has to live until the submit call returns.
  std::vector<nghttp2_nv> ToNv(const std::vector<std::pair<std::string_view, std::string_view>>&
                                   extra = {}) const {
    std::vector<nghttp2_nv> nv;
    nv.reserve(fields_.size() + extra.size());
    for (const Field& f : fields_) {
      nghttp2_vec n = nghttp2_rcbuf_get_buf(f.name);
      nghttp2_vec v = nghttp2_rcbuf_get_buf(f.value);
      nv.push_back({n.base, v.base, n.len, v.len,
                    static_cast<uint8_t>(f.flags & NGHTTP2_NV_FLAG_NO_INDEX)});
    }
    for (const auto& [name, value] : extra) nv.push_back(MakeNv(name, value));
    return nv;
  }

  // Finds the first field with this name (names are lower case on the wire).
  std::string_view Get(std::string_view name) const {
    for (const Field& f : fields_) {
      if (RcbufView(f.name) == name) return RcbufView(f.value);
    }
    return {};
  }

  static nghttp2_nv MakeNv(std::string_view name, std::string_view value) {
    return {const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
            const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())), name.size(),
            value.size(), NGHTTP2_NV_FLAG_NONE};
  }

 private:
  struct Field {
    nghttp2_rcbuf* name;
    nghttp2_rcbuf* value;
    uint8_t flags;
  };
  std::vector<Field> fields_;
};

}  // namespace sepal
