import Foundation
import Stages
import Tensor

BLASRuntime.selectFastKernels()

exit(RoleMain.main("decode", CommandLine.arguments))
