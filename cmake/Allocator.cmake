# The sepal binary's malloc (bench/memory.md has the measurements behind the choice).
#
# SEPAL_ALLOCATOR=jemalloc (default): Debian's jemalloc 5.3 (libjemalloc-dev to build,
# libjemalloc2 at run time: the Debian package's Depends via dpkg-shlibdeps, the container's
# runtime stage), with a background thread that hands freed pages back to the kernel within
# about a second (proxy/memory/jemalloc_config.cc). glibc's malloc keeps what a burst freed:
# after 3000 short connections sepal stayed at 91 MiB, and even malloc_trim(0) leaves ~2.6x
# the idle size (the free chunks between long-lived small objects each pin a page); jemalloc
# comes back to 1.1-2.3x idle, at the same throughput.
# SEPAL_ALLOCATOR=glibc: glibc's malloc; the memory budget still trims it (malloc_trim).
# Sanitizer builds (asan, tsan, fuzz presets) always keep glibc's: the sanitizer's allocator
# replaces malloc there.
# Included after add_subdirectory(proxy): it adds to the `sepal` executable only (the tests and
# load generators keep glibc's malloc unless they link sepal's).
set(SEPAL_ALLOCATOR "jemalloc" CACHE STRING "malloc for the sepal binary: jemalloc or glibc")
set_property(CACHE SEPAL_ALLOCATOR PROPERTY STRINGS jemalloc glibc)

set(sepal_allocator "${SEPAL_ALLOCATOR}")
if(NOT sepal_allocator MATCHES "^(jemalloc|glibc)$")
  message(FATAL_ERROR "SEPAL_ALLOCATOR must be jemalloc or glibc, not '${SEPAL_ALLOCATOR}'")
endif()
if(sepal_allocator STREQUAL "jemalloc" AND
   (SEPAL_BUILD_FUZZ OR CMAKE_CXX_FLAGS MATCHES "-fsanitize"))
  message(STATUS "sepal allocator: glibc (a sanitizer build: its allocator replaces malloc)")
  set(sepal_allocator "glibc")
endif()

if(sepal_allocator STREQUAL "jemalloc")
  find_library(SEPAL_JEMALLOC_LIBRARY NAMES jemalloc)
  if(NOT SEPAL_JEMALLOC_LIBRARY)
    message(FATAL_ERROR
      "jemalloc not found: apt-get install libjemalloc-dev (scripts/install-deps.sh does), "
      "or configure with -DSEPAL_ALLOCATOR=glibc")
  endif()
  message(STATUS "sepal allocator: jemalloc (${SEPAL_JEMALLOC_LIBRARY})")
  # The settings jemalloc reads at start-up (malloc_conf), in the executable itself.
  target_sources(sepal PRIVATE ${PROJECT_SOURCE_DIR}/proxy/memory/jemalloc_config.cc)
  # Linked even though no object of sepal names a jemalloc symbol (malloc and operator new
  # reach it through symbol interposition ahead of libc), so past --as-needed.
  target_link_libraries(sepal PRIVATE -Wl,--no-as-needed ${SEPAL_JEMALLOC_LIBRARY}
                        -Wl,--as-needed)
else()
  message(STATUS "sepal allocator: glibc")
endif()
