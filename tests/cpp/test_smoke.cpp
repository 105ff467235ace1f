#include <gtest/gtest.h>

#include "compiler/ir/text.h"
#include "frontend/cells.h"

TEST(Smoke, LstmRoundTrips) {
  auto cell = cellfuse::cells::lstm(7, 33);
  auto text = cellfuse::print_cell(cell);
  auto back = cellfuse::parse_cell(text);
  EXPECT_TRUE(cellfuse::structurally_equal(cell, back)) << text;
}
